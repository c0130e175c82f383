"""Paired statistics: planted differences are found, planted ties are not, Holm is Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medtransfer.protocols.metrics import metric_from_scores
from medtransfer.results.paired import Paired, holm_adjust, paired_bootstrap, paired_episodes


def _accuracy(t: np.ndarray, s: np.ndarray) -> float:
    return metric_from_scores(t, s, "accuracy")


def _scores(y: np.ndarray, correct: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """One-hot scores that are right exactly where ``correct`` is."""
    predicted = np.where(correct, y, (y + 1) % n_classes)
    return np.eye(n_classes, dtype=np.float32)[predicted]


def test_episodes_planted_difference_is_detected_with_the_t_interval() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, size=(2, 300))  # two seeds of 300 episodes
    better = np.clip(base + 0.02 + rng.normal(0, 0.01, size=base.shape), 0, 1)
    result = paired_episodes("A", "B", better, base)
    d = (better - base).ravel() * 100
    t = stats.ttest_rel(better.ravel(), base.ravel())
    assert result.difference == pytest.approx(d.mean())
    assert result.p == pytest.approx(t.pvalue, rel=1e-6) and result.n == 600
    half = stats.t.ppf(0.975, 599) * d.std(ddof=1) / math.sqrt(600)
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert result.detected()
    assert result.verdict().startswith(f"A beats B by {d.mean():.2f} points (95% CI ")
    assert "paired t over 600 shared episodes" in result.verdict()


def test_episodes_planted_tie_is_not_flagged() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 0.9, size=600)
    same = paired_episodes("A", "B", base, base.copy())
    assert (same.difference, same.p) == (0.0, 1.0) and not same.detected()
    # two models with equal expected accuracy and independent noise
    a = np.clip(base + rng.normal(0, 0.05, 600), 0, 1)
    b = np.clip(base + rng.normal(0, 0.05, 600), 0, 1)
    tie = paired_episodes("A", "B", a, b)
    assert not tie.detected() and tie.low < 0 < tie.high
    assert tie.verdict().startswith("no detectable difference between A and B")


def test_pairing_finds_what_separate_intervals_miss() -> None:
    """Hard and easy episodes move both models alike: their separate intervals overlap, the
    paired difference is clear."""
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.3, 1.0, size=600)
    a, b = np.clip(difficulty + 0.01, 0, 1), difficulty
    half_a = 1.96 * (a * 100).std() / math.sqrt(600)
    half_b = 1.96 * (b * 100).std() / math.sqrt(600)
    assert abs(a.mean() - b.mean()) * 100 < half_a + half_b  # the intervals overlap
    assert paired_episodes("A", "B", a, b).detected()


def test_rows_planted_difference_is_detected() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=200)
    good = _scores(y, rng.uniform(size=200) < 0.9)
    poor = _scores(y, rng.uniform(size=200) < 0.6)
    result = paired_bootstrap("A", "B", _accuracy, y, good, poor, n_resamples=500, seed=0)
    assert result.difference == pytest.approx(_accuracy(y, good) - _accuracy(y, poor))
    assert result.detected() and result.low > 0 and result.p < 0.01
    flipped = paired_bootstrap("B", "A", _accuracy, y, poor, good, n_resamples=500, seed=0)
    assert flipped.verdict().startswith("A beats B by")
    assert "paired bootstrap over 200 shared test rows, 500 resamples" in result.verdict()


def test_rows_planted_tie_is_not_flagged() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=200)
    scores = _scores(y, rng.uniform(size=200) < 0.8)
    same = paired_bootstrap("A", "B", _accuracy, y, scores, scores.copy(), n_resamples=300)
    assert (same.difference, same.p) == (0.0, 1.0) and not same.detected()
    # equal accuracy, different errors: a tie, not flagged
    first = np.zeros(200, dtype=bool)
    first[:160] = True
    second = np.roll(first, 37)
    tie = paired_bootstrap("A", "B", _accuracy, y, _scores(y, first), _scores(y, second))
    assert tie.difference == 0.0 and not tie.detected()


def test_rows_metric_is_any_metric_and_runs_are_averaged() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    right = _scores(y, np.ones(6, dtype=bool))
    wrong_minority = _scores(y, np.array([1, 1, 1, 1, 0, 0], dtype=bool))
    mpca = lambda t, s: metric_from_scores(t, s, "mean per-class accuracy")  # noqa: E731
    result = paired_bootstrap("A", "B", mpca, y, right, wrong_minority, n_resamples=50)
    assert result.difference == pytest.approx(50.0)
    runs = paired_bootstrap(
        "A", "B", _accuracy, y, np.stack([right, wrong_minority]), np.stack([right, right])
    )
    assert runs.difference == pytest.approx((100 + 400 / 6) / 2 - 100)


def test_holm_matches_the_step_down_rule() -> None:
    pairs = [Paired("a", "b", 1.0, 0.0, 2.0, p, 10, "m") for p in (0.01, 0.04, 0.03, 0.5)]
    adjusted = [r.p_adjusted for r in holm_adjust(pairs)]
    # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, max(0.09, 0.08), max(0.09, 0.5)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [r.detected() for r in holm_adjust(pairs)] == [True, False, False, False]
    assert "Holm-adjusted p = 0.04" in holm_adjust(pairs)[0].verdict()
