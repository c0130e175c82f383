"""The ``features`` commands: extract a feature store ahead of the protocols (all of it, or
part I of N on one worker of many), and say where a store stands.

The store a protocol reads is named by its key (:mod:`medtransfer.features.store`): the
backbone and its weights, the dataset's rows and files, the preprocessing, the pixels and
the precision. These commands take the same data, model and compute flags as the protocols
and build the preprocessing the protocol named by ``--for`` builds, through the same
function (:func:`medtransfer.jobs.common.extract_feature_part` and
:func:`~medtransfer.jobs.common.prepare_features` share one set of store arguments), so
the protocol run afterwards reads the store without a forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medtransfer.errors import ConfigError
from medtransfer.features.layout import Part, parse_part
from medtransfer.jobs.flags import image_size_option, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions

if TYPE_CHECKING:
    from medtransfer.data.spec import DatasetSpec
    from medtransfer.data.transforms import Preprocessing

#: The protocols that read the feature store, whose preprocessing ``--for`` names.
FEATURE_PROTOCOLS: tuple[str, ...] = ("linear", "knn", "few-shot")


def protocol_preprocessing(
    protocol: str, spec: DatasetSpec, image_size: int = 224, resize: str | None = None
) -> Preprocessing:
    """The preprocessing ``protocol`` uses on a dataset of ``spec``: linear and kNN resize
    the shorter side; few-shot uses the dataset's few-shot geometry (the original's); an
    explicit ``resize`` wins (few-shot's ``--resize``)."""
    from medtransfer.data.transforms import Preprocessing

    if protocol not in FEATURE_PROTOCOLS:
        raise ConfigError(f"--for {protocol!r}: use one of {', '.join(FEATURE_PROTOCOLS)}.")
    default = spec.few_shot_resize if protocol == "few-shot" else "shorter"
    return Preprocessing(image_size=image_size, resize=resize or default)


@dataclass(frozen=True)
class FeatureOptions:
    """Which features: those a protocol reads, and which part of the store to extract."""

    for_protocol: str = option(
        "linear",
        "extract the features this protocol reads: linear and knn resize the shorter side; "
        "few-shot uses the dataset's few-shot resize",
        flags=("--for",),
        choices=FEATURE_PROTOCOLS,
    )
    image_size: int = image_size_option()
    resize: str | None = option(
        None,
        "resize geometry, as the protocol's own flag (default: the one --for uses)",
        choices=("square", "shorter"),
    )
    part: Part | None = option(
        None,
        "extract only part I of N of the store's shards, e.g. 2/3 (one per worker; the "
        "last part to finish completes the store); default: all of it",
        parse=parse_part,
    )


#: The option classes of the ``features`` commands, in flag order.
OPTION_CLASSES: tuple[type, ...] = (DataOptions, ModelOptions, FeatureOptions, RunOptions)


def resolve_options(
    given: Mapping[str, Any], preset: str = "none"
) -> tuple[DataOptions, ModelOptions, FeatureOptions, RunOptions]:
    """The options of a ``features`` command from the values the user gave, over the
    settings of the ``--for`` protocol's preset ``preset`` (those of its fields these
    commands have), over the defaults. Raises ConfigError for a preset the protocol lacks."""
    from medtransfer.jobs.registry import get_job

    protocol = given.get("for_protocol", FeatureOptions.for_protocol)
    fields = {f.name for cls in OPTION_CLASSES for f in dataclasses.fields(cls)}
    applied: dict[str, Any] = {}
    if preset != "none":
        job = get_job(protocol)
        if preset not in job.presets:
            offered = ", ".join(["none", *job.presets])
            raise ConfigError(f"{protocol} has no preset {preset!r}; it offers: {offered}.")
        applied = {k: v for k, v in job.presets[preset].items() if k in fields and k not in given}
    values = {**applied, **given}
    built = []
    for cls in OPTION_CLASSES:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if cls is RunOptions:
            kwargs.update(preset=preset, preset_settings=applied)
        built.append(cls(**kwargs))
    data, model, features, run = built
    return data, model, features, run  # type: ignore[return-value]
