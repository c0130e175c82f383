"""The job contract: what a job is (:class:`Job`) and what every job returns
(:class:`JobResult`)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def split_doc(doc: str | None) -> tuple[str, str]:
    """(help line, description) of a docstring-style text: the summary line as argparse help
    lines read (first letter in lower case, no final full stop), and the paragraphs after
    it ("" when there are none)."""
    summary, _, body = (doc or "").strip().partition("\n\n")
    summary = summary.rstrip(".")
    return summary[:1].lower() + summary[1:], body.strip()


@dataclass(frozen=True)
class JobResult:
    """A finished job.

    ``record_path``: the JSON record written (its log beside it); ``record``: that record;
    ``metrics``: ``record["metrics"]``; ``lines``: the result lines for people, which the
    command line prints as they are (the record's log holds them too, after the log-only
    lines); ``extracted``: for jobs over the feature store, whether this run extracted the
    features (None for jobs that read no features).
    """

    record_path: Path
    record: dict[str, Any]
    metrics: dict[str, Any]
    lines: list[str]
    extracted: bool | None = None


@dataclass(frozen=True)
class Job:
    """One sub-command of the command line.

    ``name``: the sub-command; ``run``: ``run(roots, *options) -> JobResult``, whose
    parameters after ``roots`` are annotated with options dataclasses (their fields declare
    the flags, see :mod:`medtransfer.jobs.flags`); ``doc``: the job module's docstring,
    whose summary line is the job's line in ``medtransfer --help`` and whose body is its
    ``--help`` description.
    """

    name: str
    run: Callable[..., JobResult]
    doc: str | None

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
