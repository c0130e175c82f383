"""k-nearest-neighbour classification over cached features.

Cosine-similarity kNN with temperature-weighted votes (as modern SSL benchmarks report
it): train and val rows vote, test rows are scored with the dataset's metric and a bootstrap
95% interval, for several k in one pass."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.config import Roots
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import bootstrap_option, image_size_option, int_list, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions


@dataclass(frozen=True)
class KnnOptions:
    """kNN flags: neighbour counts, temperature, image size, bootstrap resamples."""

    ks: tuple[int, ...] = option(
        (10, 20, 100, 200), "neighbour counts, comma-separated", flags=("--k",), parse=int_list
    )
    temperature: float = option(0.07, "vote temperature")
    image_size: int = image_size_option()
    bootstrap: int = bootstrap_option()
    seed: int = option(0, "bootstrap seed")


def run_knn(
    roots: Roots, data: DataOptions, model: ModelOptions, options: KnnOptions, run: RunOptions
) -> JobResult:
    """kNN over cached features (train and val rows vote, test rows are scored).

    Records every metric per k under ``k<k>_<metric>``; prints the dataset metric per k.
    """
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import Outcome, prepare_features, write_feature_record
    from medtransfer.protocols.knn import knn_votes
    from medtransfer.protocols.metrics import metric_key
    from medtransfer.protocols.stats import format_interval, metrics_with_interval
    from medtransfer.results.sidecar import row_arrays

    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    job = prepare_features(roots, data.open(roots), model, preprocessing, run)
    start = time.perf_counter()
    bank = np.concatenate([job.manifest.select("train"), job.manifest.rows("val")])
    test = job.manifest.select("test")
    features, labels = job.features.features, job.features.labels
    metric, name = job.metric, metric_key(job.metric)
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
        per_k = metrics_with_interval(
            labels[test], result.scores, metric, n_resamples=options.bootstrap, seed=options.seed
        )
        metrics.update({f"k{result.k}_{key}": value for key, value in per_k.items()})
        lines.append(f"k={result.k}: {metric} {per_k[name]:.2f}%{format_interval(per_k, name)}")
    job.timings["knn_s"] = time.perf_counter() - start
    params = {
        "ks": list(options.ks),
        "temperature": options.temperature,
        "bootstrap": options.bootstrap,
        "bank": "train+val",
        "metric": metric,
    }
    extra = {"bank_rows": len(bank), "test_rows": len(test)}
    n_classes = len(job.manifest.class_names)
    arrays = row_arrays(
        test, labels[test], [v.scores for v in votes], [v.k for v in votes], n_classes
    )
    outcome = Outcome("knn", params, options.seed, metrics, lines, extra, arrays=arrays)
    return write_feature_record(roots, job, model, outcome)


JOB = Job("knn", run_knn, __doc__)
