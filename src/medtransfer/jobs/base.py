"""The job contract: what a job is (:class:`Job`) and what every job returns
(:class:`JobResult`)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError

#: Named bundles of settings a job can take at once (``--preset NAME``); ``none`` is the
#: corrected defaults.
PRESETS: tuple[str, ...] = ("none", "original")


def split_doc(doc: str | None) -> tuple[str, str]:
    """(help line, description) of a docstring-style text: the summary line as argparse help
    lines read (first letter in lower case, no final full stop), and the paragraphs after
    it ("" when there are none)."""
    summary, _, body = (doc or "").strip().partition("\n\n")
    summary = summary.rstrip(".")
    return summary[:1].lower() + summary[1:], body.strip()


@dataclass(frozen=True)
class Headline:
    """One headline number of a finished job, for a table of several runs: ``name`` (the
    metric, e.g. ``accuracy`` or ``k=20 accuracy``), ``value`` (percent) and ``interval``
    (how sure, in words: ``± 0.66 (95% over episodes)``, ``95% CI 70.10-75.30``, or "")."""

    name: str
    value: float
    interval: str = ""


@dataclass(frozen=True)
class JobResult:
    """A finished job.

    ``record_path``: the JSON record written (its log beside it); ``record``: that record;
    ``metrics``: ``record["metrics"]``; ``lines``: the result lines for people, which the
    command line prints as they are (the record's log holds them too, after the log-only
    lines); ``extracted``: for jobs over the feature store, whether this run extracted the
    features (None for jobs that read no features); ``notes``: the policies in force, one
    ``name: sentence`` line each, printed before ``lines`` (the record holds them under
    ``policies``); ``headlines``: the numbers a table of several runs shows.
    """

    record_path: Path
    record: dict[str, Any]
    metrics: dict[str, Any]
    lines: list[str]
    extracted: bool | None = None
    notes: list[str] = field(default_factory=list)
    headlines: tuple[Headline, ...] = ()


@dataclass(frozen=True)
class Job:
    """One sub-command of the command line.

    ``name``: the sub-command; ``run``: ``run(roots, *options) -> JobResult``, whose
    parameters after ``roots`` are annotated with options dataclasses (their fields declare
    the flags, see :mod:`medtransfer.jobs.flags`); ``doc``: the job module's docstring,
    whose summary line is the job's line in ``medtransfer --help`` and whose body is its
    ``--help`` description; ``presets``: preset name -> {option field name: value}, the
    settings ``--preset NAME`` gives the fields the user did not set (e.g. ``"original"``:
    what the published runs used, see ``docs/original-study.md``); ``result_options``: the
    fields declared ``output_only`` (see :mod:`medtransfer.jobs.flags`) that nevertheless
    change THIS job's result (fine-tuning: ``batch_size``, its training batch), so resume
    keys keep them.
    """

    name: str
    run: Callable[..., JobResult]
    doc: str | None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    result_options: tuple[str, ...] = ()

    @property
    def help(self) -> str:
        """The docstring's summary line (see :func:`split_doc`)."""
        return split_doc(self.doc)[0]

    @property
    def description(self) -> str:
        """The docstring after its summary line."""
        return split_doc(self.doc)[1]

    @property
    def options(self) -> tuple[type, ...]:
        """The options dataclasses ``run`` takes after the roots, in order."""
        hints = typing.get_type_hints(self.run)
        names = list(inspect.signature(self.run).parameters)[1:]
        missing = [name for name in names if name not in hints]
        if missing:
            raise TypeError(
                f"{self.name}: annotate {missing} of its run function with options classes"
            )
        return tuple(hints[name] for name in names)

    def resolve(self, given: Mapping[str, Any], preset: str = "none") -> tuple[Any, ...]:
        """The options ``run`` takes, built from ``given`` (field name -> value, what the user
        set: flags on the command line, keys in a sweep file) over ``preset``'s settings
        over the fields' defaults.

        The options class that has a ``preset`` field (``RunOptions``) gets the preset's
        name and, in ``preset_settings``, the settings the preset actually applied.

        Raises:
            ConfigError: an unknown preset, a name in ``given`` that is no option of this
                job, or a preset this job does not offer.
        """
        if preset not in PRESETS:
            raise ConfigError(f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}.")
        if preset != "none" and preset not in self.presets:
            offered = ", ".join(["none", *self.presets])
            raise ConfigError(f"{self.name} has no preset {preset!r}; it offers: {offered}.")
        fields = {f.name: cls for cls in self.options for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ConfigError(f"{self.name} has no option(s) {', '.join(unknown)}.")
        settings = dict(self.presets.get(preset, {}))
        applied = {k: v for k, v in settings.items() if k not in given}
        values = {**applied, **given}
        built = []
        for cls in self.options:
            names = {f.name for f in dataclasses.fields(cls)}
            kwargs = {k: v for k, v in values.items() if k in names}
            if "preset" in names:
                kwargs.update(preset=preset, preset_settings=applied)
            built.append(cls(**kwargs))
        return tuple(built)

    def check_presets(self) -> None:
        """Raise TypeError unless every preset setting names one option field of this job,
        no two options classes share a field name (a setting must have one home), and every
        name in ``result_options`` is an output-only field of this job."""
        seen: dict[str, str] = {}
        output_only = set()
        for cls in self.options:
            for f in dataclasses.fields(cls):
                if f.name in seen:
                    raise TypeError(
                        f"{self.name}: field {f.name} is in both {seen[f.name]} and {cls.__name__}"
                    )
                seen[f.name] = cls.__name__
                if f.metadata.get("output_only"):
                    output_only.add(f.name)
        stray = sorted(set(self.result_options) - output_only)
        if stray:
            raise TypeError(f"{self.name}: result_options {stray} are no output-only fields")
        for preset, settings in self.presets.items():
            if preset not in PRESETS or preset == "none":
                raise TypeError(f"{self.name}: unknown preset {preset!r}")
            unknown = sorted(set(settings) - set(seen))
            if unknown:
                raise TypeError(f"{self.name}: preset {preset} sets unknown fields {unknown}")
