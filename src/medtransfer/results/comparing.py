"""``medtransfer compare``: run what is missing through the registered jobs, then rank and
compare paired (:mod:`medtransfer.results.compare`).

A record is reused (no run) when it is of the same protocol, model and manifest (same
dataset, split, labels), in the same effective precision and preset, with every option
the job would run with equal to the record's parameter of that name, and it has its
arrays sidecar. The jobs themselves reuse the feature store, so a new protocol on a model
already extracted runs no forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.jobs.options import DataOptions, RunOptions
from medtransfer.results.collect import RecordFile, read_records
from medtransfer.results.compare import (
    PAIRED_PROTOCOLS,
    GroupComparison,
    adjust,
    compare_group,
    interval_text,
)
from medtransfer.results.sidecar import sidecar_path
from medtransfer.textable import format_table

if TYPE_CHECKING:
    from medtransfer.jobs.base import Job
    from medtransfer.results.compare_options import CompareOptions


def catalog_name(model: str) -> str:
    """The catalog name of ``model`` (aliases resolved; other names as given)."""
    from medtransfer.models.catalog import get_model_spec

    try:
        return get_model_spec(model).name
    except (MedTransferError, KeyError):
        return model


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def expected_params(resolved: Sequence[Any]) -> dict[str, Any]:
    """What a record of these options must hold: every field of the protocol and model
    options (not the data and compute ones: the manifest hash and precision stand for
    them), as JSON values."""
    out = {}
    for options in resolved:
        if isinstance(options, (DataOptions, RunOptions)):
            continue
        for field in dataclasses.fields(options):
            out[field.name] = _jsonable(getattr(options, field.name))
    return out


def matches(record: RecordFile, expected: dict[str, Any]) -> bool:
    """Whether ``record`` holds ``expected`` (:func:`expected_params`): ``seed`` is the
    record's seed, ``image_size``/``resize`` its preprocessing (a None resize: the dataset's
    own), ``model`` is checked by the caller, and any other option its parameter of that
    name where the record has one."""
    params = record.params
    preprocessing = params.get("preprocessing") or {}
    for key, value in expected.items():
        if key == "model":
            continue
        if key == "seed":
            if record.data.get("seed") != value:
                return False
        elif key in ("image_size", "resize"):
            if value is not None and preprocessing.get(key) != value:
                return False
        elif key == "ks" and "ks" in params:  # k above the bank were dropped, and named
            ran = set(params["ks"]) | set(record.data.get("ks_dropped") or [])
            if ran != set(value):
                return False
        elif key in params and params[key] != value:
            return False
    return True


def find_reusable(
    records: Sequence[RecordFile],
    protocol: str,
    resolved: Sequence[Any],
    *,
    manifest_hash: str,
    precision: str,
    preset: str,
) -> RecordFile | None:
    """The newest record that :func:`matches` the resolved options and has a sidecar."""
    expected = expected_params(resolved)
    model = catalog_name(str(expected.get("model", "")))
    found = [
        r
        for r in records
        if r.data["protocol"] == protocol
        and r.data["model"] == model
        and r.data.get("manifest_hash") == manifest_hash
        and r.params.get("precision") == precision
        and (r.params.get("preset") or "none") == preset
        and matches(r, expected)
        and sidecar_path(r.path).is_file()
    ]
    return max(found, key=lambda r: (r.data["created"], str(r.path)), default=None)


def protocol_settings(
    job: Job, options: CompareOptions, preset: str, n_classes: int
) -> dict[str, Any]:
    """The protocol options compare sets: the image size when given, few-shot n-way
    (min(5, classes) unless given or preset) and the given shape; kNN's k list when it
    lacks ``--k``."""
    from medtransfer.jobs.knn import KnnOptions

    preset_fields = job.presets.get(preset, {})
    out: dict[str, Any] = {}
    if options.image_size is not None:
        out["image_size"] = options.image_size
    if job.name == "few-shot":
        if options.n_way is not None:
            out["n_way"] = options.n_way
        elif "n_way" not in preset_fields:
            out["n_way"] = min(5, n_classes)
        for key in ("n_support", "n_query", "iter_num"):
            if getattr(options, key) is not None:
                out[key] = getattr(options, key)
    if job.name == "knn" and options.k not in KnnOptions().ks and "ks" not in preset_fields:
        out["ks"] = (*KnnOptions().ks, options.k)
    return out


def compare_models(roots: Roots, options: CompareOptions) -> str:
    """Run what is missing, compare, and return the text to print."""
    from medtransfer.compute import resolve_device, resolve_precision
    from medtransfer.jobs.registry import get_job

    models = list(dict.fromkeys(options.models))
    if len(models) < 2:
        raise ConfigError("compare needs at least two models: -m A -m B (or -m A,B).")
    unknown = [p for p in options.protocols if p not in PAIRED_PROTOCOLS]
    if unknown:
        raise ConfigError(
            f"--protocol {','.join(unknown)}: compare pairs {', '.join(PAIRED_PROTOCOLS)}."
        )
    settings = dict(options.settings)
    preset = settings.pop("preset", "none")
    data_fields = {f.name for f in dataclasses.fields(DataOptions)}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    data = DataOptions(**{k: v for k, v in settings.items() if k in data_fields})
    run = RunOptions(**{k: v for k, v in settings.items() if k in run_fields})
    opened = data.open(roots)
    precision = resolve_precision(run.precision, resolve_device(run.device))
    records, _ = read_records(roots.results)
    groups: list[GroupComparison] = []
    provenance: dict[str, str] = {}
    lines: list[str] = []
    for protocol in options.protocols:
        job = get_job(protocol)
        extra = protocol_settings(job, options, preset, len(opened.manifest.class_names))
        chosen = []
        for model in models:
            resolved = job.resolve({**settings, "model": model, **extra}, preset)
            found = None
            if not options.rerun:
                found = find_reusable(
                    records,
                    protocol,
                    resolved,
                    manifest_hash=opened.manifest.hash,
                    precision=precision,
                    preset=preset,
                )
            if found is None:
                result = job.run(roots, *resolved)
                found = RecordFile(result.record_path, result.record)
                provenance[str(found.path)] = "ran"
            else:
                provenance[str(found.path)] = "reused"
            lines.append(f"{protocol} {model}: {provenance[str(found.path)]} {found.path}")
            chosen.append(found)
        groups.append(
            compare_group(
                protocol,
                opened.manifest.dataset,
                chosen,
                k=options.k,
                resamples=options.resamples,
                seed=options.seed,
            )
        )
    adjust(groups)
    return "\n".join([*lines, "", format_groups(groups, options.alpha, provenance)])


def format_groups(
    groups: Sequence[GroupComparison], alpha: float, provenance: dict[str, str] | None = None
) -> str:
    """Rankings and verdicts as text."""
    n_pairs = sum(len(g.pairs) for g in groups)
    out = []
    for group in groups:
        rows = [
            (
                i,
                item.label,
                item.metric,
                f"{item.value:.2f}",
                interval_text(item.low, item.high),
                (provenance or {}).get(str(item.record.path), ""),
            )
            for i, item in enumerate(group.ranking, 1)
        ]
        out.append(f"{group.protocol} on {group.dataset}:")
        out.append(format_table(("#", "model", "metric", "value", "95% interval", "run"), rows))
        if group.pairs:
            out.append(f"paired verdicts (Holm over {n_pairs} comparisons, level {alpha}):")
            out += [f"  {pair.verdict(alpha)}" for pair in group.pairs]
        out += [f"  not compared: {reason}" for reason in group.unpaired]
        out.append("")
    return "\n".join(out).rstrip()
