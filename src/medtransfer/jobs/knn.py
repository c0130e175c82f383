"""The kNN job: cached features, train+val as the neighbour bank, test as queries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import Roots
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY
from medtransfer.data.transforms import Preprocessing
from medtransfer.jobs.common import (
    DataOptions,
    ModelOptions,
    RunOptions,
    feature_params,
    prepare_features,
    write_job_record,
)
from medtransfer.protocols.knn import knn_votes
from medtransfer.protocols.metrics import (
    binary_auc,
    dataset_metric,
    mean_per_class_accuracy,
    metric_key,
)
from medtransfer.protocols.stats import format_interval, interval_entries


@dataclass(frozen=True)
class KnnOptions:
    """kNN flags: neighbour counts, temperature, image size, bootstrap resamples."""

    ks: Sequence[int] = field(default=(10, 20, 100, 200))
    temperature: float = 0.07
    image_size: int = 224
    bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class KnnResult:
    """A finished kNN run: metrics per k and the record."""

    metrics: dict[str, Any]
    record_path: Path
    record: dict[str, Any]
    lines: list[str]


def knn_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: str,
    *,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """The dataset metric with its bootstrap interval, balanced accuracy, binary AUC."""
    name = metric_key(metric)
    predictions = scores.argmax(axis=1)
    out: dict[str, Any] = interval_entries(
        name,
        lambda t, p: dataset_metric(metric, t, p),
        y_true,
        predictions,
        n_resamples=bootstrap,
        seed=seed,
    )
    if metric != MEAN_PER_CLASS_ACCURACY:
        out["balanced_accuracy"] = mean_per_class_accuracy(y_true, predictions)
    if scores.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["auc"] = binary_auc(y_true, scores[:, 1])
    return out


def run_knn(
    roots: Roots, data: DataOptions, model: ModelOptions, options: KnnOptions, run: RunOptions
) -> KnnResult:
    """kNN over cached features (train and val rows vote, test rows are scored)."""
    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    job = prepare_features(roots, data, model, preprocessing, run)
    start = time.perf_counter()
    bank = np.concatenate([job.manifest.select("train"), _maybe(job, "val")])
    test = job.manifest.select("test")
    features, labels = job.features.features, job.features.labels
    metric = job.metric
    votes = knn_votes(
        features[bank],
        labels[bank],
        features[test],
        ks=options.ks,
        temperature=options.temperature,
        n_classes=len(job.manifest.class_names),
        device=job.device,
    )
    metrics: dict[str, Any] = {}
    lines = []
    for result in votes:
        per_k = knn_metrics(
            labels[test], result.scores, metric, bootstrap=options.bootstrap, seed=options.seed
        )
        metrics.update({f"k{result.k}_{name}": value for name, value in per_k.items()})
        main = per_k[metric_key(metric)]
        ci = format_interval(per_k, metric_key(metric))
        lines.append(f"k={result.k}: {metric} {main:.2f}%{ci}")
    job.timings["knn_s"] = time.perf_counter() - start
    params = {
        "ks": list(options.ks),
        "temperature": options.temperature,
        "bootstrap": options.bootstrap,
        "bank": "train+val",
        "metric": metric,
        **feature_params(job, model),
    }
    path, record = write_job_record(
        roots,
        job,
        protocol="knn",
        params=params,
        seed=options.seed,
        metrics=metrics,
        extra={"bank_rows": len(bank), "test_rows": len(test)},
        result_lines=lines,
    )
    return KnnResult(metrics, path, record, lines)


def _maybe(job: Any, split: str) -> np.ndarray:
    """Rows of a split, or none when the manifest has no such split (val fraction 0)."""
    present = set(job.manifest.table["split"])
    return job.manifest.select(split) if split in present else np.array([], dtype=np.int64)
