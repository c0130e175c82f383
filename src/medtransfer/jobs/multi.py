"""Several models through one job: the dataset resolved once, one run per model, one table.

The job functions stay single-model; this runner loops over models for the command line
(``-m a -m b`` or ``-m a,b``) and for anything that compares models (``compare``, sweeps):

* every model name (and its results label) is checked before the first run, so a typo
  fails before any feature is extracted;
* the dataset is resolved and its manifest built once (:func:`sharing_data`);
* a model whose weights cannot be had (:class:`ModelError`, :class:`DownloadError`) is
  reported in the table and the others still run; any other error (bad data or options,
  the same for every model) stops the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medtransfer.config import Roots
from medtransfer.errors import ConfigError, DownloadError, ModelError
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import str_list
from medtransfer.jobs.options import ModelOptions, sharing_data
from medtransfer.textable import format_table


def split_models(text: str) -> list[str]:
    """Model names from ``-m`` values joined by commas (``"a,b"`` -> ``["a", "b"]``), in
    order, each once."""
    return list(dict.fromkeys(str_list(text, "-m/--model")))


@dataclass(frozen=True)
class ModelRun:
    """One model's run: its ``result``, or the ``error`` that stopped it."""

    model: str
    result: JobResult | None = None
    error: str = ""


def _check_models(models: Sequence[str], given: Mapping[str, Any]) -> None:
    """Refuse what cannot be meant, before any run: one ``--label`` or ``--weights`` file
    for several models, an unknown model, a label naming another catalog model."""
    from medtransfer.jobs.common import model_label

    if len(models) > 1:
        for field, flag in (("label", "--label"), ("weights", "--weights")):
            if given.get(field) is not None:
                raise ConfigError(
                    f"{flag} belongs to one model; run the models of {', '.join(models)} "
                    f"one at a time to give each its own {flag}."
                )
    model_fields = {k: v for k, v in given.items() if k in ModelOptions.__dataclass_fields__}
    for name in models:
        model_label(ModelOptions(**{**model_fields, "model": name}))


def run_models(
    job: Job,
    roots: Roots,
    given: Mapping[str, Any],
    models: Sequence[str],
    preset: str = "none",
    on_result: Callable[[ModelRun], None] | None = None,
) -> list[ModelRun]:
    """Run ``job`` once per model of ``models`` with the options ``given`` (field name ->
    value, without ``model``) under ``preset``; ``on_result`` sees each run as it ends."""
    _check_models(models, given)
    runs = []
    with sharing_data():
        for name in models:
            options = job.resolve({**given, "model": name}, preset)
            try:
                run = ModelRun(name, job.run(roots, *options))
            except (ModelError, DownloadError) as exc:
                run = ModelRun(name, error=str(exc))
            runs.append(run)
            if on_result is not None:
                on_result(run)
    return runs


def summary_table(runs: Sequence[ModelRun]) -> str:
    """One row per headline number of each run: model (its label), metric, value,
    interval, record."""
    rows = []
    for run in runs:
        if run.result is None:
            rows.append((run.model, "failed", "-", run.error.splitlines()[0][:60], "-"))
            continue
        label = run.result.record.get("label", run.model)
        for headline in run.result.headlines:
            rows.append(
                (
                    label,
                    headline.name,
                    f"{headline.value:.2f}%",
                    headline.interval or "-",
                    str(run.result.record_path),
                )
            )
    return format_table(("model", "metric", "value", "interval", "record"), rows)
