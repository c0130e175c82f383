"""k-nearest-neighbour classification over cached features.

Cosine-similarity kNN with temperature-weighted votes (as modern SSL benchmarks report
it): train and val rows vote, test rows are scored with the dataset's metric and a bootstrap
95% interval, for several k in one pass. A k above the number of voting rows would let
every row vote, the same as k equal to it: such k are dropped, with a note. The original
study had no kNN; --preset original gives it the original linear probe's data, labels and
features (docs/original-study.md#presets), so its numbers sit beside that probe's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medtransfer.config import Roots
from medtransfer.errors import ProtocolError
from medtransfer.jobs.base import Headline, Job, JobResult
from medtransfer.jobs.checks import require_classes, require_test_rows
from medtransfer.jobs.flags import bootstrap_option, image_size_option, int_list, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.original import LINEAR_FEATURES

if TYPE_CHECKING:
    from medtransfer.data.manifest import Manifest


@dataclass(frozen=True)
class KnnOptions:
    """kNN flags: neighbour counts, temperature, image size, bootstrap resamples."""

    ks: tuple[int, ...] = option(
        (10, 20, 100, 200),
        "neighbour counts, comma-separated (those above the voting rows are dropped)",
        flags=("--k",),
        parse=int_list,
    )
    temperature: float = option(0.07, "vote temperature")
    image_size: int = image_size_option()
    bootstrap: int = bootstrap_option()
    seed: int = option(0, "bootstrap seed")


def knn_plan(manifest: Manifest, ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The voting rows (train then val), the test rows and the ks kept, checked against the
    manifest before any image is read. A k above the voting rows is dropped (all rows
    would vote, as with k equal to it); none left, fewer than two voting classes, or no
    test rows is an error."""
    if any(k < 1 for k in ks):
        raise ProtocolError(f"--k values must be >= 1; got {','.join(map(str, ks))}.")
    bank = np.concatenate([manifest.select("train"), manifest.rows("val")])
    test = manifest.select("test")
    kept = [k for k in dict.fromkeys(ks) if k <= len(bank)]
    if not kept:
        raise ProtocolError(
            f"Every --k ({','.join(map(str, ks))}) is above the {len(bank)} voting rows "
            f"(train and val) of {manifest.dataset}; use k <= {len(bank)}."
        )
    require_classes(manifest, bank, "kNN", "the voting rows (train and val)")
    require_test_rows(manifest)
    return bank, test, kept


def run_knn(
    roots: Roots, data: DataOptions, model: ModelOptions, options: KnnOptions, run: RunOptions
) -> JobResult:
    """kNN over cached features (train and val rows vote, test rows are scored).

    Records every metric per k under ``k<k>_<metric>``; prints the dataset metric per k.
    """
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import (
        Outcome,
        StoreRequest,
        open_job_data,
        prepare_features,
        write_feature_record,
    )
    from medtransfer.jobs.policies import resize_policy
    from medtransfer.protocols.knn import knn_votes
    from medtransfer.protocols.metrics import metric_key
    from medtransfer.protocols.stats import format_interval, metrics_with_interval
    from medtransfer.results.sidecar import row_arrays

    opened = open_job_data(roots, data, model, "knn")
    bank, test, ks = knn_plan(opened.manifest, options.ks)
    dropped = [k for k in options.ks if k not in ks]
    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    job = prepare_features(roots, StoreRequest("knn", opened, model, preprocessing, run))
    start = time.perf_counter()
    features, labels = job.features.features, job.features.labels
    metric, name = job.metric, metric_key(job.metric)
    votes = knn_votes(
        features[bank],
        labels[bank],
        features[test],
        ks=tuple(ks),
        temperature=options.temperature,
        n_classes=len(job.manifest.class_names),
        device=job.device,
    )
    metrics: dict[str, Any] = {}
    lines, headlines = [], []
    for result in votes:
        per_k = metrics_with_interval(
            labels[test], result.scores, metric, n_resamples=options.bootstrap, seed=options.seed
        )
        metrics.update({f"k{result.k}_{key}": value for key, value in per_k.items()})
        lines.append(f"k={result.k}: {metric} {per_k[name]:.2f}%{format_interval(per_k, name)}")
        headlines.append(
            Headline(
                f"k={result.k} {metric}",
                float(per_k[name]),  # type: ignore[arg-type]
                format_interval(per_k, name).strip(" ()"),
            )
        )
    job.timings["knn_s"] = time.perf_counter() - start
    params = {
        "ks": list(ks),
        "temperature": options.temperature,
        "bootstrap": options.bootstrap,
        "bank": "train+val",
        "metric": metric,
    }
    extra = {"bank_rows": len(bank), "test_rows": len(test), "ks_dropped": dropped}
    policies = {
        "resize": resize_policy(
            opened.spec, options.image_size, "shorter", options.image_size, protocol="knn"
        )
    }
    if dropped:
        policies["k"] = (
            f"k={','.join(map(str, dropped))} dropped: above the {len(bank)} voting rows, "
            "where every row votes"
        )
    n_classes = len(job.manifest.class_names)
    arrays = row_arrays(
        test, labels[test], [v.scores for v in votes], [v.k for v in votes], n_classes
    )
    outcome = Outcome(
        "knn", params, options.seed, metrics, lines, extra, arrays=arrays, policies=policies,
        headlines=tuple(headlines),
    )  # fmt: skip
    return write_feature_record(roots, job, model, outcome)


JOB = Job(
    "knn",
    run_knn,
    __doc__,
    # no kNN in the original: the original linear probe's data, labels and features
    presets={"original": dict(LINEAR_FEATURES)},
)
