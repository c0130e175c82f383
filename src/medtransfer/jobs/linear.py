"""The linear-probe job: cached features, the original's C search, test metric, record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.config import Roots
from medtransfer.data.transforms import Preprocessing
from medtransfer.jobs.common import (
    DataOptions,
    ModelOptions,
    RunOptions,
    feature_params,
    prepare_features,
    write_job_record,
)
from medtransfer.protocols.linear import C_GRID, LinearResult, linear_evaluation
from medtransfer.protocols.metrics import dataset_metric, metric_key
from medtransfer.protocols.stats import format_interval, interval_entries


@dataclass(frozen=True)
class LinearOptions:
    """The original's linear flags (spec/evaluations.md §2.1) plus solver choices."""

    C: float | None = None
    grid_size: int = 45
    solver: str = "torch"
    image_size: int = 224
    bootstrap: int = 1000
    seed: int = 0


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


def run_linear(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: LinearOptions,
    run: RunOptions,
) -> LinearJobResult:
    """Logistic regression on cached features with C chosen on the val split."""
    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    job = prepare_features(roots, data, model, preprocessing, run)
    start = time.perf_counter()
    features, labels = job.features.features, job.features.labels
    present = set(job.manifest.table["split"])
    if options.C is None and "val" not in present:
        from medtransfer.errors import ProtocolError

        raise ProtocolError(
            "The C search needs a validation split; use --val-fraction > 0 or fix --C."
        )
    val = job.manifest.select("val") if "val" in present else np.array([], dtype=np.int64)
    train, test = job.manifest.select("train"), job.manifest.select("test")
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
    name = metric_key(job.metric)
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
    ci = format_interval(metrics, name)
    job.timings["linear_s"] = time.perf_counter() - start
    lines = [
        f"Accuracy on val set: {score:.2f}% using hyperparameter C: {c:.3f}"
        for c, score in result.val_curve
    ]
    lines.append(
        f"Final {job.metric} for {job.backbone.spec.name} on {job.manifest.dataset}: "
        f"{metrics[name]:.2f}%{ci} using hyperparameter C: {result.chosen_C:.3f}"
    )
    params = {
        "C": options.C,
        "grid_size": options.grid_size,
        "solver": options.solver,
        "metric": job.metric,
        "bootstrap": options.bootstrap,
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
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        },
        result_lines=lines,
    )
    return LinearJobResult(result, path, record, lines, job.features.computed)
