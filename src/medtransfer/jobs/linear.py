"""Linear probe: logistic regression on cached features, C chosen on val.

The original's linear evaluation: L2 logistic regression for each C of a 45-value grid
(1e6 down to 1e-5) on the train split, scored on val with the dataset's metric (ties go to
the larger C), refit on train+val at the chosen C, tested. A torch L-BFGS solver minimises
scikit-learn's exact objective (--solver sklearn runs scikit-learn itself; sklearn-legacy
the scikit-learn before 1.4 that the 2022 runs had). --preset original sets what the
published runs used (docs/original-study.md#presets)."""

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
    from medtransfer.jobs.common import FeatureJob
    from medtransfer.protocols.linear import LinearResult


@dataclass(frozen=True)
class LinearOptions:
    """The original's linear flags (docs/original-study.md#linear) plus solver choices."""

    C: float | None = option(None, "fix C and skip the validation search", flags=("-c", "--C"))
    grid_size: int = option(45, "grid points (the original's -w)", flags=("-w", "--wd-values"))
    solver: str = option(
        "torch",
        "torch: L-BFGS on scikit-learn's objective, to convergence; sklearn: the installed "
        "scikit-learn as the original called it (100 iterations, warm starts); "
        "sklearn-legacy: the same with scikit-learn < 1.4's objective and stopping rules, "
        "as the 2022 runs had them (docs/original-study.md#linear)",
        choices=("torch", "sklearn", "sklearn-legacy"),
    )
    image_size: int = image_size_option()
    bootstrap: int = bootstrap_option()
    seed: int = option(0, "bootstrap seed")
    seeds: tuple[int, ...] | None = option(
        None,
        "comma-separated seeds: re-draw the validation hold-out once per seed (test split "
        "fixed) and record the mean and spread",
        parse=int_list,
    )


def format_C(C: float) -> str:
    """C in scientific notation with 4 significant digits (``1.000e+06``, ``5.623e+03``)."""
    return f"{C:.3e}"


def check_linear_data(manifest: Manifest, options: LinearOptions) -> None:
    """Refuse, before any feature is extracted, what the manifest alone shows cannot run:
    a C search without a validation split, a training split with fewer than two classes,
    an empty test split."""
    if options.C is None and len(manifest.rows("val")) == 0:
        raise ProtocolError(
            "The C search needs a validation split; use --val-fraction > 0 or fix --C."
        )
    require_classes(manifest, manifest.rows("train"), "logistic regression", "the train split")
    require_test_rows(manifest)


def _evaluate(
    job: FeatureJob, manifest: Manifest, options: LinearOptions
) -> tuple[LinearResult, dict[str, Any], dict[str, int]]:
    """One C search + refit + test on ``manifest``'s splits over the job's features:
    (result, test metrics with the interval, split sizes)."""
    from medtransfer.protocols.linear import c_grid, linear_evaluation
    from medtransfer.protocols.stats import metrics_with_interval

    if manifest.rows_hash != job.manifest.rows_hash:  # pragma: no cover - same source rows
        raise RuntimeError("validation re-draws must keep the manifest's rows")
    features, labels = job.features.features, job.features.labels
    train, val, test = manifest.select("train"), manifest.rows("val"), manifest.select("test")
    check_linear_data(manifest, options)
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
    metrics = metrics_with_interval(
        labels[test],
        result.test_probabilities,
        job.metric,
        classes=result.classes,
        n_resamples=options.bootstrap,
        seed=options.seed,
    )
    return result, metrics, {"train": len(train), "val": len(val), "test": len(test)}


def run_linear(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: LinearOptions,
    run: RunOptions,
) -> JobResult:
    """Logistic regression on cached features with C chosen on the val split.

    With ``options.seeds``, the validation hold-out is re-drawn once per seed (the test split
    stays fixed; the features are shared), and the record holds every seed's chosen C and
    metrics with their mean and spread. Prints the final test metric per seed; the
    validation curve goes to the log.
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
    from medtransfer.protocols.metrics import metric_key
    from medtransfer.protocols.stats import format_interval, format_spread, mean_over_seeds
    from medtransfer.results.sidecar import row_arrays

    seeds: list[int | None] = list(options.seeds) if options.seeds else [None]
    opened = open_job_data(roots, data, model, "linear", val_seed=seeds[0])
    check_linear_data(opened.manifest, options)
    preprocessing = Preprocessing(image_size=options.image_size, resize="shorter")
    job = prepare_features(roots, StoreRequest("linear", opened, model, preprocessing, run))
    start = time.perf_counter()
    name = metric_key(job.metric)
    runs = []
    for val_seed in seeds:
        manifest = (
            job.manifest
            if val_seed == seeds[0]
            else data.for_protocol("linear").manifest(
                opened.resolved, roots.cache, val_seed=val_seed
            )
        )
        runs.append(_evaluate(job, manifest, options))
    job.timings["linear_s"] = time.perf_counter() - start
    result, metrics, sizes = runs[0]
    if len(runs) > 1:
        metrics = mean_over_seeds([m for _, m, _ in runs], name)
    curve = [
        f"Accuracy on val set: {score:.2f}% using hyperparameter C: {format_C(c)}"
        for c, score in result.val_curve
    ]
    lines = []
    for seed, (r, m, _) in zip(seeds, runs, strict=True):
        prefix = "" if seed is None else f"[val seed {seed}] "
        lines.append(
            f"{prefix}Final {job.metric} for {job.backbone.spec.name} on {job.manifest.dataset}: "
            f"{m[name]:.2f}%{format_interval(m, name)} using hyperparameter C: "
            f"{format_C(r.chosen_C)}"
        )
    if len(runs) > 1:
        lines.append(format_spread(metrics, name, "validation draws"))
    params = {
        "C": options.C,
        "grid_size": options.grid_size,
        "solver": options.solver,
        "metric": job.metric,
        "bootstrap": options.bootstrap,
        "seeds": list(options.seeds) if options.seeds else None,
    }
    per_seed = [
        {"val_seed": seed, "chosen_C": r.chosen_C, "metrics": m}
        for seed, (r, m, _) in zip(seeds, runs, strict=True)
    ]
    extra = {
        "chosen_C": result.chosen_C,
        "val_curve": [list(point) for point in result.val_curve],
        "n_iter": list(result.n_iter),
        "converged": list(result.converged),
        "unconverged_fits": result.unconverged,
        "solver_timings": result.timings,
        "sizes": sizes,
        **({"per_seed": per_seed} if len(runs) > 1 else {}),
    }
    policies = {
        "resize": resize_policy(
            opened.spec, options.image_size, "shorter", options.image_size, protocol="linear"
        )
    }
    headline = Headline(
        job.metric, float(metrics[name]), format_interval(metrics, name).strip(" ()")
    )
    test = job.manifest.select("test")
    arrays = row_arrays(
        test,
        job.features.labels[test],
        [r.test_probabilities for r, _, _ in runs],
        [-1 if seed is None else seed for seed in seeds],
        len(job.manifest.class_names),
        [r.classes for r, _, _ in runs],
    )
    outcome = Outcome(
        "linear", params, options.seed, metrics, lines, extra, curve, arrays,
        policies=policies, headlines=(headline,),
    )  # fmt: skip
    return write_feature_record(roots, job, model, outcome)


JOB = Job(
    "linear",
    run_linear,
    __doc__,
    presets={"original": {**LINEAR_FEATURES, "solver": "sklearn-legacy", "grid_size": 45}},
)
