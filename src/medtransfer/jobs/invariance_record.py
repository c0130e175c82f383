"""The records of the invariance job: the outcome of one transform (or of the multi-view
pairs) with its metrics, curve, policies and headline, and the files beside it
(``similarity.npy``, ``distance.npy``, ``curve.png``).

Imports no torch at module level (the command line starts without it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.jobs.base import Headline, JobResult
from medtransfer.jobs.options import ModelOptions, RunOptions

if TYPE_CHECKING:
    import numpy as np

    from medtransfer.analysis.invariance import Summary
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import ModelJob, Outcome
    from medtransfer.jobs.invariance_options import InvarianceOptions


@dataclass
class RunState:
    """What every transform of one run shares: the model job, the pool of images, the
    evaluated items and their clean features, the geometry, and where features came from."""

    job: ModelJob
    pool: np.ndarray
    items: np.ndarray
    clean: np.ndarray
    geometry: Any
    preprocessing: Preprocessing
    precision: str
    feature_job: Any = None


def bootstrap_bounds(
    values: np.ndarray, included: np.ndarray, options: InvarianceOptions
) -> list[float] | None:
    """Bootstrap interval over images of the aggregate of ``values`` (n, k), or None."""
    import warnings

    import numpy as np

    from medtransfer.protocols.stats import bootstrap_interval

    if options.bootstrap < 1 or len(values) < 2:
        return None

    def aggregate(_: np.ndarray, rows: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.mean(np.nanmean(rows, axis=0)[included]))

    interval = bootstrap_interval(
        aggregate, values, values, n_resamples=options.bootstrap, seed=options.seed
    )
    return [interval.low, interval.high]


def outcome(
    options: InvarianceOptions,
    shared: RunState,
    model: ModelOptions,
    run: RunOptions,
    transform: str,
    describe: dict[str, Any],
    values: list[Any],
    identity: int | None,
    similarity: np.ndarray,
    distance: np.ndarray,
    extra: dict[str, Any],
) -> tuple[Outcome, Any]:
    """The record of one transform (or of the multi-view pairs) and its ``outputs``."""
    from medtransfer.analysis.invariance import summarize
    from medtransfer.jobs.common import Outcome, model_params

    exclude = None if options.keep_identity else identity
    summary = summarize(similarity, distance, exclude=exclude)
    job = shared.job
    dataset, name = job.manifest.dataset, job.backbone.spec.name
    metrics: dict[str, Any] = {
        "similarity": summary.similarity,
        "distance": summary.distance,
        "images": len(similarity),
        "parameter_values": len(summary.included),
    }
    lines = [
        f"{name} on {transform} with dataset {dataset}:",
        f"\t distance {summary.distance:.6f} and similarity {summary.similarity:.6f}",
    ]
    for key, array in (("similarity", similarity), ("distance", distance)):
        bounds = bootstrap_bounds(array, summary.included, options)
        if bounds is not None:
            metrics[f"{key}_ci"] = bounds
    if "similarity_ci" in metrics:
        low, high = metrics["similarity_ci"]
        unit = "pairs" if options.multiview else "images"
        lines.append(f"similarity 95% CI [{low:.6f}, {high:.6f}] over {len(similarity)} {unit}")
    if identity is not None:
        kept = "kept in" if options.keep_identity else "left out of"
        lines.append(f"the identity view ({values[identity]!r}) is {kept} the mean")
    params = {
        **{f.name: getattr(options, f.name) for f in fields(options)},
        "transform": transform,
        "metric": "similarity",
        "k": len(values),
        "view_plan": describe,
        "batch_size": run.batch_size,
        "precision": shared.precision,
    }
    if shared.feature_job is None:
        params.update(
            preprocessing=shared.preprocessing.describe(),
            **model_params(job.backbone, model),
            **job.manifest.params,
        )
    curve = {
        "parameters": values,
        "similarity": summary.curve_similarity.tolist(),
        "distance": summary.curve_distance.tolist(),
        "identity_index": identity,
        "included": summary.included.tolist(),
    }
    record_extra = {
        "curve": curve,
        "statistics": shared.geometry.describe(),
        "items": [str(job.manifest.table["path"].iat[int(r)]) for r in shared.items],
        "unscored_pairs": summary.nan,
        **extra,
    }
    log_only = [
        "mean and covariance of {n_samples} clean images: {estimator}, shrinkage "
        "{shrinkage:.4g}, condition number {condition_number:.4g}".format(
            **shared.geometry.describe()
        )
    ]
    interval = metrics.get("similarity_ci")
    headline = Headline(
        f"{transform} similarity",
        summary.similarity,
        f"95% CI [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "",
    )
    outcome = Outcome(
        "invariance",
        params,
        options.seed,
        metrics,
        lines,
        record_extra,
        log_only,
        policies=policies(options, shared, describe),
        headlines=(headline,),
    )
    return outcome, writer(transform, values, identity, similarity, distance, summary)


def writer(
    transform: str,
    values: list[Any],
    identity: int | None,
    similarity: np.ndarray,
    distance: np.ndarray,
    summary: Summary,
) -> Callable[[Path], None]:
    """``outputs(folder)``: the (n, k) scores as .npy and, for k > 1, curve.png."""

    def write(folder: Path) -> None:
        import numpy as np

        from medtransfer.analysis.pictures import save_curve

        np.save(folder / "similarity.npy", similarity)
        np.save(folder / "distance.npy", distance)
        if len(values) > 1:
            scalar = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            x = [float(v) for v in values] if scalar else list(range(len(values)))
            save_curve(
                folder / "curve.png",
                x,
                {
                    "Mahalanobis cosine similarity": summary.curve_similarity,
                    "Mahalanobis distance": summary.curve_distance,
                },
                xlabel=f"{transform} parameter" if scalar else f"{transform} parameter index",
                title=f"{transform}: mean over {len(similarity)} images",
                marked=identity,
            )

    return write


def policies(
    options: InvarianceOptions, shared: RunState, describe: dict[str, Any]
) -> dict[str, str]:
    """The invariance run's own policies in force, for the printed notes and the record."""
    statistics = shared.geometry.describe()
    sampling = (
        "the original's np.random.seed(0) draws, with replacement"
        if options.sampling == "original"
        else f"distinct images drawn with seed {options.seed}"
    )
    out = {
        "images": f"{len(shared.items)} {sampling} from every row (train, val, test)",
        "statistics": f"{statistics['estimator']} covariance of {statistics['n_samples']} "
        f"clean images (condition number {statistics['condition_number']:.3g})",
        "batchnorm": "running statistics (eval mode)"
        if options.batchnorm == "eval"
        else "train mode in the original's batches (docs/original-study.md#defect-e33)",
    }
    if not options.multiview:
        out["views"] = (
            f"transformed at the resize side {describe.get('side')} px, then centre crop"
            if options.transform_at == "resized"
            else "transformed at full resolution, then resized (the original, "
            "docs/original-study.md#defect-e35)"
        )
        out["identity"] = (
            "averaged in (the original)" if options.keep_identity else "left out of the mean"
        )
    return out


def write(
    roots: Roots, shared: RunState, model: ModelOptions, outcome: tuple[Outcome, Any]
) -> JobResult:
    from medtransfer.jobs.common import write_feature_record, write_job_record

    record, outputs = outcome
    if shared.feature_job is not None:
        return write_feature_record(roots, shared.feature_job, model, record, outputs=outputs)
    return write_job_record(roots, shared.job, record, outputs=outputs)
