"""The linear-probe job: cached features, the original's C search, test metric, record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.config import Roots
from medtransfer.data.manifest import Manifest
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ProtocolError
from medtransfer.jobs.common import (
    DataOptions,
    FeatureJob,
    ModelOptions,
    RunOptions,
    feature_params,
    prepare_features,
    write_job_record,
)
from medtransfer.protocols.linear import C_GRID, LinearResult, linear_evaluation
from medtransfer.protocols.metrics import dataset_metric, metric_key
from medtransfer.protocols.stats import format_interval, interval_entries, mean_over_seeds


@dataclass(frozen=True)
class LinearOptions:
    """The original's linear flags (spec/evaluations.md §2.1) plus solver choices."""

    C: float | None = None
    grid_size: int = 45
    solver: str = "torch"
    image_size: int = 224
    bootstrap: int = 1000
    seed: int = 0
    seeds: Sequence[int] | None = None  # re-draw the validation hold-out once per seed


@dataclass(frozen=True)
class LinearJobResult:
    """A finished linear probe."""

    result: LinearResult
    record_path: Path
    record: dict[str, Any]
    lines: list[str]
    extracted: bool


def c_grid(points: int) -> tuple[float, ...]:
    """``1 / logspace(-6, 5, points)`` as the original built it (45 points: :data:`C_GRID`)."""
    if points == len(C_GRID):
        return C_GRID
    return tuple(1.0 / w for w in torch.logspace(-6, 5, points).tolist())


def _evaluate(
    job: FeatureJob, manifest: Manifest, options: LinearOptions, name: str
) -> tuple[LinearResult, dict[str, Any], dict[str, int]]:
    """One C search + refit + test on ``manifest``'s splits over the job's features."""
    if manifest.rows_hash != job.manifest.rows_hash:  # pragma: no cover - same source rows
        raise RuntimeError("validation re-draws must keep the manifest's rows")
    features, labels = job.features.features, job.features.labels
    present = set(manifest.table["split"])
    if options.C is None and "val" not in present:
        raise ProtocolError(
            "The C search needs a validation split; use --val-fraction > 0 or fix --C."
        )
    val = manifest.select("val") if "val" in present else np.array([], dtype=np.int64)
    train, test = manifest.select("train"), manifest.select("test")
    result = linear_evaluation(
        np.asarray(features[train]),
        labels[train],
        np.asarray(features[val]),
        labels[val],
        np.asarray(features[test]),
        labels[test],
        metric=job.metric,
        Cs=c_grid(options.grid_size),
        fixed_C=options.C,
        solver=options.solver,  # type: ignore[arg-type]
        device=job.device,
    )
    metrics: dict[str, Any] = {
        **result.metrics,
        **interval_entries(
            name,
            lambda t, p: dataset_metric(job.metric, t, p),
            labels[test],
            result.test_predictions,
            n_resamples=options.bootstrap,
            seed=options.seed,
        ),
    }
    return result, metrics, {"train": len(train), "val": len(val), "test": len(test)}


def run_linear(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: LinearOptions,
    run: RunOptions,
) -> LinearJobResult:
    """Logistic regression on cached features with C chosen on the val split.

    With ``options.seeds``, the validation hold-out is re-drawn once per seed (the test split
    stays fixed; the features are shared), and the record holds every seed's chosen C and
    metrics with their mean and spread.
    """
    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    seeds: list[int | None] = list(options.seeds) if options.seeds else [None]
    job = prepare_features(roots, replace(data, val_seed=seeds[0]), model, preprocessing, run)
    start = time.perf_counter()
    name = metric_key(job.metric)
    runs = []
    for val_seed in seeds:
        manifest = (
            job.manifest
            if val_seed == seeds[0]
            else replace(data, val_seed=val_seed).manifest(roots)
        )
        runs.append(_evaluate(job, manifest, options, name))
    job.timings["linear_s"] = time.perf_counter() - start
    result, metrics, sizes = runs[0]
    per_seed = [
        {"val_seed": seed, "chosen_C": r.chosen_C, "metrics": m}
        for seed, (r, m, _) in zip(seeds, runs, strict=True)
    ]
    if len(runs) > 1:
        metrics = mean_over_seeds([m for _, m, _ in runs], name)
    lines = [
        f"Accuracy on val set: {score:.2f}% using hyperparameter C: {c:.3f}"
        for c, score in result.val_curve
    ]
    for seed, (r, m, _) in zip(seeds, runs, strict=True):
        prefix = "" if seed is None else f"[val seed {seed}] "
        lines.append(
            f"{prefix}Final {job.metric} for {job.backbone.spec.name} on {job.manifest.dataset}: "
            f"{m[name]:.2f}%{format_interval(m, name)} using hyperparameter C: {r.chosen_C:.3f}"
        )
    if len(runs) > 1:
        summary = metrics[f"{name}_spread"]
        lines.append(
            f"over {summary['n']} validation draws: {summary['mean']:.2f}% "
            f"± {summary['std']:.2f} (std)"
        )
    params = {
        "C": options.C,
        "grid_size": options.grid_size,
        "solver": options.solver,
        "metric": job.metric,
        "bootstrap": options.bootstrap,
        "seeds": list(options.seeds) if options.seeds else None,
        **feature_params(job, model),
    }
    path, record = write_job_record(
        roots,
        job,
        protocol="linear",
        params=params,
        seed=options.seed,
        metrics=metrics,
        extra={
            "chosen_C": result.chosen_C,
            "val_curve": [list(point) for point in result.val_curve],
            "n_iter": list(result.n_iter),
            "unconverged_fits": result.unconverged,
            "solver_timings": result.timings,
            "sizes": sizes,
            **({"per_seed": per_seed} if len(runs) > 1 else {}),
        },
        result_lines=lines,
    )
    return LinearJobResult(result, path, record, lines, job.features.computed)
