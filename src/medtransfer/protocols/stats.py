"""Honest statistics: bootstrap intervals of test metrics, and spread over seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medtransfer.errors import ProtocolError
from medtransfer.protocols.metrics import classification_metrics, metric_from_scores, metric_key


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval [low, high]."""

    value: float
    low: float
    high: float


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``metric(y_true, y_score)`` over test rows.

    ``y_true``: (M,); ``y_score``: (M,) predictions or (M,) / (M, K) scores, whatever
    ``metric`` takes. Resamples rows with replacement ``n_resamples`` times with a seeded
    generator; resamples on which the metric is undefined (it raises
    :class:`~medtransfer.errors.ProtocolError`, e.g. AUC with one class) are skipped. Any
    other error is a bug in ``metric`` and propagates.
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1 (use no interval instead).")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(y_true), size=len(y_true))
        try:
            values.append(metric(y_true[rows], y_score[rows]))
        except ProtocolError:
            continue
    point = metric(y_true, y_score)
    if not values:
        return Interval(point, float("nan"), float("nan"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation, min and max of one metric over repeated seeds."""

    mean: float
    std: float
    min: float
    max: float
    n: int


def spread(values: Sequence[float]) -> Spread:
    """Summary of a metric over seeds (std with ddof=1; 0 for a single seed)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Spread(float(array.mean()), std, float(array.min()), float(array.max()), len(array))


def interval_entries(
    name: str,
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    n_resamples: int,
    seed: int,
) -> dict[str, object]:
    """Record entries ``{name: value, name_ci: [low, high]}``; no ``_ci`` when
    ``n_resamples`` is 0 (intervals turned off)."""
    if n_resamples < 1:
        return {name: metric(y_true, y_score)}
    interval = bootstrap_interval(metric, y_true, y_score, n_resamples=n_resamples, seed=seed)
    return {name: interval.value, f"{name}_ci": [interval.low, interval.high]}


def format_interval(entries: dict[str, object], name: str) -> str:
    """`` (95% CI a-b)`` for the entries of :func:`interval_entries`, or "" without one."""
    bounds = entries.get(f"{name}_ci")
    if not isinstance(bounds, list):
        return ""
    return f" (95% CI {bounds[0]:.2f}-{bounds[1]:.2f})"


def format_spread(metrics: dict[str, object], name: str, runs: str) -> str:
    """``over N <runs>: mean% ± std (std)`` for the ``<name>_spread`` entry of
    :func:`mean_over_seeds`."""
    summary = metrics[f"{name}_spread"]
    assert isinstance(summary, dict)
    return f"over {summary['n']} {runs}: {summary['mean']:.2f}% ± {summary['std']:.2f} (std)"


def metrics_with_interval(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: str,
    *,
    n_resamples: int,
    seed: int,
    classes: np.ndarray | None = None,
    auc_from: str = "probabilities",
) -> dict[str, object]:
    """:func:`~medtransfer.protocols.metrics.classification_metrics` of ``scores`` (N, K)
    against ``y_true`` (N,), with the bootstrap interval of the main metric
    (:func:`interval_entries`). ``classes`` (K,) labels the score columns; ``auc_from``: see
    :func:`~medtransfer.protocols.metrics.metric_from_scores`."""
    return {
        **classification_metrics(y_true, scores, metric, classes=classes, auc_from=auc_from),
        **interval_entries(
            metric_key(metric, auc_from),
            lambda t, s: metric_from_scores(t, s, metric, classes=classes, auc_from=auc_from),
            y_true,
            scores,
            n_resamples=n_resamples,
            seed=seed,
        ),
    }


def mean_over_seeds(per_seed: Sequence[dict[str, object]], name: str) -> dict[str, object]:
    """Record metrics of repeated runs: the mean of every numeric entry, plus
    ``<name>_spread`` (mean, std, min, max, n of the main metric ``name``). With one run,
    its metrics unchanged."""
    if len(per_seed) == 1:
        return dict(per_seed[0])
    out: dict[str, object] = {}
    for key in per_seed[0]:
        values = [run[key] for run in per_seed]
        if all(isinstance(v, (int, float)) for v in values):
            out[key] = float(np.mean(values))
    out[f"{name}_spread"] = spread([float(run[name]) for run in per_seed]).__dict__  # type: ignore[arg-type]
    return out
