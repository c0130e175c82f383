"""Keys of grid cells: the cell key (what changes a cell's result, and nothing else) and the
reuse key (what the features a cell reads depend on).

The cell key is a sha256 over the job's name and its resolved options (given values over
the preset over the defaults), leaving out

* fields declared ``output_only`` (device, workers, the batch of frozen passes, progress
  bars, the preset's name: its settings are in the other fields), unless the job names
  them in ``Job.result_options`` (fine-tuning's training batch);
* fields at their declared default. A new option added with a default that keeps the old
  behaviour therefore leaves every key as it was, and a finished grid is not re-run after
  an upgrade; a changed default is not a reason to re-run either (pin the value in the
  grid, or use ``--force``).

Setting a field explicitly to its default gives the same key as leaving it out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from medtransfer.fsutil import sha256_json
from medtransfer.jobs.base import Job

#: Bumped when the key's recipe changes (every cell then counts as new).
KEY_VERSION = 1

#: Option fields the stored features of a cell depend on besides the model's fields: the
#: dataset, the crop size, the precision of the forward passes and where the pixels come
#: from. The resize geometry (``Preprocessing.resize``) is left out on purpose: some jobs
#: fix it without an option (kNN and linear resize the shorter side), so cells that differ
#: only in it may or may not share features; keeping them together costs nothing.
FEATURE_FIELDS: tuple[str, ...] = ("dataset", "image_size", "precision", "use_prepared")


def json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def result_values(job: Job, options: tuple[Any, ...]) -> dict[str, Any]:
    """The resolved option values that change ``job``'s result and differ from their
    defaults, as JSON values (field name -> value)."""
    values = {}
    for obj in options:
        for field in dataclasses.fields(obj):
            output_only = field.metadata.get("output_only", False)
            if output_only and field.name not in job.result_options:
                continue
            value = getattr(obj, field.name)
            if value == _default(field):
                continue
            values[field.name] = json_value(value)
    return values


def cell_key(job: Job, options: tuple[Any, ...]) -> str:
    """The cell key (hex sha256) of ``job`` run with ``options``."""
    return sha256_json(
        {"key_version": KEY_VERSION, "job": job.name, "options": result_values(job, options)}
    )


def reuse_key(options: tuple[Any, ...]) -> str | None:
    """A hash of what the features of a run with ``options`` depend on: every field of the
    model options and :data:`FEATURE_FIELDS` (None for jobs over neither a model nor a
    dataset). Cells that read the same stored features have one reuse key (cells with one
    key may still need different features: see :data:`FEATURE_FIELDS`)."""
    from medtransfer.jobs.options import ModelOptions

    values: dict[str, Any] = {}
    for obj in options:
        for field in dataclasses.fields(obj):
            if isinstance(obj, ModelOptions) or field.name in FEATURE_FIELDS:
                values[field.name] = json_value(getattr(obj, field.name))
    if "model" not in values and "dataset" not in values:
        return None
    return sha256_json(values)
