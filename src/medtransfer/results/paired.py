"""Paired statistics: is model A's score really different from model B's on the same items?

Two models scored on the *same* items (few-shot: the same episodes, since episodes depend
only on the labels and the seed; linear and kNN: the same test rows) differ item by item,
and the item-to-item variation they share cancels in the difference. Comparing their two
intervals instead ignores that and misses real differences. Here:

* episodes: the mean per-episode accuracy difference with a paired t interval and
  two-sided p-value (hundreds of episodes: the t approximation is sound);
* test rows: the metric difference (any metric: accuracy, mean per-class accuracy, AUC)
  with a paired percentile bootstrap over test rows (the same resampled rows for both
  models) and a two-sided bootstrap p-value;
* several comparisons at once: Holm's step-down correction of the p-values.

All differences are in percentage points (A − B).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from medtransfer.errors import ProtocolError


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``a`` and ``b``: ``difference`` (A − B, points) with its 95%
    interval [``low``, ``high``], the two-sided ``p`` value, ``p_adjusted`` (after Holm;
    equal to ``p`` until :func:`holm_adjust`), ``n`` paired items and the ``method``."""

    a: str
    b: str
    difference: float
    low: float
    high: float
    p: float
    n: int
    method: str
    p_adjusted: float = math.nan

    def detected(self, alpha: float = 0.05) -> bool:
        """Whether the difference is real at level ``alpha`` after the correction."""
        p = self.p if math.isnan(self.p_adjusted) else self.p_adjusted
        return p < alpha

    def verdict(self, alpha: float = 0.05) -> str:
        """``A beats B by x points (95% CI lo to hi; ...)`` or ``no detectable difference``."""
        p = self.p if math.isnan(self.p_adjusted) else self.p_adjusted
        p_text = ("Holm-adjusted p" if not math.isnan(self.p_adjusted) else "p") + _p(p)
        if self.detected(alpha):
            if self.difference > 0:
                winner, loser, x, lo, hi = self.a, self.b, self.difference, self.low, self.high
            else:
                winner, loser, x, lo = self.b, self.a, -self.difference, -self.high
                hi = -self.low
            return (
                f"{winner} beats {loser} by {x:.2f} points "
                f"(95% CI {lo:.2f} to {hi:.2f}; {p_text}; {self.method})"
            )
        return (
            f"no detectable difference between {self.a} and {self.b} "
            f"({self.a} − {self.b} = {self.difference:+.2f} points, 95% CI {self.low:.2f} to "
            f"{self.high:.2f}; {p_text}; {self.method})"
        )


def _p(p: float) -> str:
    """`` = 0.012`` or `` < 0.0001``."""
    return f" = {p:.2g}" if p >= 1e-4 else " < 0.0001"


def paired_episodes(a: str, b: str, acc_a: np.ndarray, acc_b: np.ndarray) -> Paired:
    """Paired t comparison of per-episode accuracies ``acc_a``, ``acc_b`` (R, E) or (E,),
    fractions, scored on the same episodes (all R·E episodes pooled)."""
    acc_a, acc_b = np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)
    if acc_a.shape != acc_b.shape:
        raise ProtocolError(f"{a} and {b} were scored on different numbers of episodes.")
    d = (acc_a - acc_b).ravel() * 100
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        low = high = mean
    else:
        se = sd / math.sqrt(n)
        t = stats.t.ppf(0.975, n - 1)
        low, high = float(mean - t * se), float(mean + t * se)
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Paired(a, b, mean, low, high, p, n, f"paired t over {n} shared episodes")


def paired_bootstrap(
    a: str,
    b: str,
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Paired:
    """Paired bootstrap of ``metric(A) − metric(B)`` over shared test rows.

    ``y_true``: (M,); ``scores_a``, ``scores_b``: (R, M, K) class scores of R runs (the
    metric is averaged over runs, as the records average seeds) or (M, K). Each resample
    draws M rows with replacement, the same rows for both models; resamples where the
    metric is undefined (it raises ProtocolError) are skipped. The p-value is two-sided:
    the share of resampled differences at least as far from the observed one as the
    observed one is from zero (the bootstrap distribution shifted to the null), with the
    usual +1 in numerator and denominator.
    """
    y_true = np.asarray(y_true)
    scores_a, scores_b = np.asarray(scores_a), np.asarray(scores_b)
    if scores_a.ndim == 2:
        scores_a, scores_b = scores_a[None], scores_b[None]
    if scores_a.shape[1:] != scores_b.shape[1:] or scores_a.shape[1] != len(y_true):
        raise ProtocolError(f"{a} and {b} were not scored on the same test rows.")
    if n_resamples < 1:
        raise ProtocolError("The paired bootstrap needs at least one resample.")

    def difference(rows: np.ndarray) -> float:
        t = y_true[rows]
        return float(
            np.mean([metric(t, s[rows]) for s in scores_a])
            - np.mean([metric(t, s[rows]) for s in scores_b])
        )

    observed = difference(np.arange(len(y_true)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(y_true), size=len(y_true))
        try:
            draws.append(difference(rows))
        except ProtocolError:
            continue
    if not draws:
        raise ProtocolError(f"The metric is undefined on every resample of {a} vs {b}.")
    values = np.asarray(draws)
    low, high = np.percentile(values, [2.5, 97.5])
    extreme = np.sum(np.abs(values - observed) >= abs(observed) - 1e-12)
    p = float((extreme + 1) / (len(values) + 1))
    method = f"paired bootstrap over {len(y_true)} shared test rows, {len(values)} resamples"
    return Paired(a, b, observed, float(low), float(high), min(p, 1.0), len(y_true), method)


def holm_adjust(results: Sequence[Paired]) -> list[Paired]:
    """``results`` with Holm-adjusted p-values (step-down, family = all of them), in the
    same order."""
    m = len(results)
    order = sorted(range(m), key=lambda i: results[i].p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * results[i].p))
        adjusted[i] = running
    return [replace(r, p_adjusted=adj) for r, adj in zip(results, adjusted, strict=True)]
