"""The option groups every model-on-data job shares: :class:`DataOptions` (which data,
which policies), :class:`ModelOptions` (which backbone) and :class:`RunOptions` (where to
compute), declared with :func:`~medtransfer.jobs.flags.option`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medtransfer.config import PRECISIONS, Roots
from medtransfer.data.catalog import dataset_key, resolve_dataset
from medtransfer.data.manifest import SPLIT_POLICIES, Manifest, load_manifest
from medtransfer.data.sources.base import PM_POSITIVE_POLICIES, UNCERTAIN_POLICIES, LabelOptions
from medtransfer.data.sources.stoic import ORIENTATIONS
from medtransfer.data.spec import DatasetSpec, ResolvedDataset
from medtransfer.errors import ConfigError
from medtransfer.jobs.base import PRESETS
from medtransfer.jobs.flags import option
from medtransfer.jobs.original import ORIGINAL, normalization_for, uncertain_for

if TYPE_CHECKING:
    from medtransfer.models.backbone import Backbone

_LABELS = LabelOptions()


@dataclass(frozen=True)
class JobData:
    """A job's dataset, resolved once, and its manifest; ``seconds``: time to build both."""

    resolved: ResolvedDataset
    manifest: Manifest
    seconds: float

    @property
    def spec(self) -> DatasetSpec:
        return self.resolved.spec

    @property
    def key(self) -> str:
        """The dataset's folder name in the cache (features, prepared copies), with the
        decoder when it is not the default (STOIC slices in the original's orientation)."""
        key = dataset_key(self.resolved.spec)
        return f"{key}@{self.manifest.decoder}" if self.manifest.decoder else key


#: Opened datasets shared while :func:`sharing_data` is active: (options, roots, val seed)
#: -> JobData. None when sharing is off.
_SHARED: dict[tuple[Any, ...], JobData] | None = None


@contextlib.contextmanager
def sharing_data() -> Iterator[None]:
    """Inside the block, :meth:`DataOptions.open` resolves each (options, roots, val seed)
    once and hands every later caller the same :class:`JobData` (several models on one
    dataset read the tree and build the manifest once)."""
    global _SHARED
    before, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = before


@dataclass(frozen=True)
class DataOptions:
    """Which data, under which split and label policies."""

    dataset: str = option(
        help="catalog name or alias (see `datasets list`), imagefolder:PATH or csv:PATH",
        flags=("-d", "--dataset"),
    )
    split_policy: str = option(
        "patient",
        "patient: no patient on both sides of a cut; original: the study's exact split",
        choices=SPLIT_POLICIES,
    )
    split_seed: int = option(0, "seed of the patient split")
    val_fraction: float = option(0.2, "share of train held out for validation, as in the original")
    uncertain: str = option(
        _LABELS.uncertain,
        "CheXpert uncertain labels: positive (U-Ones, the original's few-shot), negative "
        "(U-Zeros, what its linear/fine-tune did), ignore (drop the rows), or original "
        "(what the original's protocol did: positive in few-shot and finetune --metric auc, "
        "negative in linear, kNN and finetune)",
        choices=(*UNCERTAIN_POLICIES, ORIGINAL),
    )
    pm_positive: str = option(
        _LABELS.pm_positive,
        "iChallenge-PM positives: P (pathological myopia; official PALM, the original's "
        "code) or HP (high and pathological myopia; the original's README)",
        choices=PM_POSITIVE_POLICIES,
    )
    stoic_orientation: str = option(
        ORIENTATIONS[0],
        "STOIC slices: radiological (anterior up, patient's right on the left) or original "
        "(the original's transposed medpy slice, docs/original-study.md#defect-d27); part of "
        "the manifest and feature keys",
        choices=ORIENTATIONS,
    )
    drop_empty_classes: bool = option(
        False,
        "leave out classes that have no image (recorded); without it an empty class is an "
        "error naming its folder",
    )

    def for_protocol(self, protocol: str) -> DataOptions:
        """These options with ``--uncertain original`` replaced by what the original's
        ``protocol`` did (the other fields as they are)."""
        if self.uncertain != ORIGINAL:
            return self
        return replace(self, uncertain=uncertain_for(protocol))

    @property
    def labels(self) -> LabelOptions:
        if self.uncertain == ORIGINAL:
            raise ConfigError(
                "--uncertain original means what the original's protocol did; the jobs "
                "resolve it (few-shot, linear, knn, finetune and the analyses). Here give "
                "positive, negative or ignore."
            )
        return LabelOptions(uncertain=self.uncertain, pm_positive=self.pm_positive)

    def manifest(
        self,
        dataset: ResolvedDataset,
        cache_root: Path,
        *,
        val_seed: int | None = None,
        keep_empty_classes: bool = False,
    ) -> Manifest:
        """The manifest of the resolved ``dataset`` under these policies (a copy is kept in
        the cache); ``val_seed`` re-draws the validation hold-out only. An empty class is an
        error, unless ``--drop-empty-classes`` leaves it out or ``keep_empty_classes``
        keeps it without rows (``datasets check`` reports it)."""
        empty = "drop" if self.drop_empty_classes else "keep" if keep_empty_classes else "error"
        return load_manifest(
            dataset,
            cache_root,
            split_policy=self.split_policy,
            seed=self.split_seed,
            val_fraction=self.val_fraction,
            labels=self.labels,
            val_seed=val_seed,
            empty_classes=empty,
            orientation=self.stoic_orientation,
        )

    def open(
        self, roots: Roots, *, val_seed: int | None = None, keep_empty_classes: bool = False
    ) -> JobData:
        """Resolve the dataset (once) and build its manifest (see :meth:`manifest`; shared
        inside :func:`sharing_data`)."""
        key = (self, roots, val_seed, keep_empty_classes)
        if _SHARED is not None and key in _SHARED:
            return _SHARED[key]
        start = time.perf_counter()
        resolved = resolve_dataset(self.dataset, roots.data, roots.cache)
        manifest = self.manifest(
            resolved, roots.cache, val_seed=val_seed, keep_empty_classes=keep_empty_classes
        )
        opened = JobData(resolved, manifest, time.perf_counter() - start)
        if _SHARED is not None:
            _SHARED[key] = opened
        return opened


@dataclass(frozen=True)
class ModelOptions:
    """Which backbone, with which weights and input handling."""

    model: str = option(
        help="catalog model (see `models list`); repeat -m or give a comma list to run several "
        "(one table at the end)",
        flags=("-m", "--model"),
        many=True,
    )
    weights: Path | None = option(
        None,
        "a torchvision-format state dict to load into the model's architecture "
        "(default: the catalog's weights)",
    )
    label: str | None = option(
        None,
        "the name results are filed and tabled under (default: the model's name; with "
        "--weights: MODEL@<weights file stem>)",
    )
    model_seed: int = option(0, "seed of random-init models (random_*)")
    no_norm: bool = option(
        False,
        "the original's --no-norm: feed [0,1] pixels without mean/std normalisation "
        "(histogram-normalised models keep theirs, as in the original)",
        flags=("-n", "--no-norm"),
    )
    norm: str = option(
        "default",
        "input normalisation: default = what the weights expect (see `models info`); "
        "study = what the original study fed the model (MoCo-CXR: ImageNet statistics); "
        "original = what the original's runner fed it in this protocol (linear: raw pixels; "
        "fine-tuning: ImageNet statistics, SimCLR-v1 included); or a kind",
        choices=("default", "study", ORIGINAL, "imagenet", "half", "cxr", "histogram", "none"),
    )

    def load(self, roots: Roots, *, progress: bool = True, protocol: str = "") -> Backbone:
        """A fresh backbone with these options (eval mode); ``protocol`` resolves
        ``--norm original``."""
        from medtransfer.models.loader import load_backbone

        return load_backbone(
            self.model,
            roots,
            weights=self.weights,
            seed=self.model_seed,
            no_norm=self.no_norm,
            progress=progress,
            norm=self.normalization(protocol),
        )

    def normalization(self, protocol: str) -> str:
        """``--norm`` with ``original`` resolved for ``protocol`` (a kind), else as given."""
        if self.norm != ORIGINAL:
            return self.norm
        from medtransfer.models.catalog import get_model_spec
        from medtransfer.models.external import is_external

        if not protocol:
            raise ConfigError("--norm original needs a protocol to resolve it.")
        if is_external(self.model):
            return normalization_for(self.model, "imagenet", protocol)
        spec = get_model_spec(self.model)
        return normalization_for(spec.name, spec.normalization, protocol)


@dataclass(frozen=True)
class RunOptions:
    """Where and how to compute."""

    CLI_GROUP: ClassVar[str] = "compute"

    device: str = option(
        "auto",
        "auto (a GPU when there is one, mixed precision there), cpu or cuda[:N]",
        output_only=True,
    )
    precision: str = option(
        "auto",
        "fp32, bf16 or fp16 (mixed precision), or auto: fp32 on the CPU; on a GPU bf16 for "
        "frozen features and fp16 AMP for fine-tuning",
        choices=PRECISIONS,
    )
    workers: int = option(0, "image decoding processes", output_only=True)
    batch_size: int = option(64, "images per forward pass", output_only=True)
    progress: bool = option(True, "hide progress bars", flags=("--no-progress",), output_only=True)
    use_prepared: bool = option(
        True,
        "decode the original files even where `datasets prepare` made resized copies",
        flags=("--no-prepared",),
    )
    preset: str = option(
        "none",
        "original: every setting the published runs used (docs/original-study.md), for the "
        "flags you do not give; none: the corrected defaults",
        choices=PRESETS,
        output_only=True,  # what it sets is in the other fields
    )
    preset_settings: dict[str, Any] = option(
        {},
        "the settings the preset applied (set by the preset, not a flag)",
        cli=False,
        output_only=True,
    )
