"""kNN votes against a brute-force reference; bootstrap intervals; spread over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.errors import ProtocolError
from medtransfer.protocols.knn import knn_votes
from medtransfer.protocols.metrics import accuracy, binary_auc
from medtransfer.protocols.stats import bootstrap_interval, spread


def _blobs(seed: int = 0, n: int = 120, dim: int = 8, classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(0, 1, size=(classes, dim))
    return (centres[labels] + rng.normal(0, 0.8, size=(n, dim))).astype(np.float32), labels


def _reference(train_x, train_y, test_x, k, temperature, classes):
    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    similarity = unit(test_x.astype(np.float64)) @ unit(train_x.astype(np.float64)).T
    out = np.zeros((len(test_x), classes))
    for i, row in enumerate(similarity):
        for j in np.argsort(-row, kind="stable")[:k]:
            out[i, train_y[j]] += np.exp(row[j] / temperature)
    return out / out.sum(axis=1, keepdims=True)


def test_votes_match_a_brute_force_reference_for_every_k() -> None:
    x, y = _blobs(0, n=160)
    train_x, train_y, test_x, test_y = x[:120], y[:120], x[120:], y[120:]
    results = knn_votes(train_x, train_y, test_x, ks=(1, 5, 20), temperature=0.1, chunk=7)
    for result in results:
        expected = _reference(train_x, train_y, test_x, result.k, 0.1, 3)
        np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
    assert accuracy(test_y, results[1].predictions) > 60


def test_k_larger_than_the_train_set_and_bad_arguments() -> None:
    train_x, train_y = _blobs(0, n=10)
    (votes,) = knn_votes(train_x, train_y, train_x, ks=(50,))
    assert votes.scores.shape == (10, 3)
    with pytest.raises(ProtocolError):
        knn_votes(train_x, train_y, train_x, ks=(0,))


def test_bootstrap_interval_contains_the_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    scores = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    a = bootstrap_interval(binary_auc, y, scores, n_resamples=200, seed=1)
    b = bootstrap_interval(binary_auc, y, scores, n_resamples=200, seed=1)
    assert a == b and a.low <= a.value <= a.high
    assert a.high - a.low < 20


def test_bootstrap_skips_undefined_resamples_but_not_bugs() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1])  # many resamples hold class 0 only: no AUC there
    scores = np.linspace(0, 1, len(y))
    interval = bootstrap_interval(binary_auc, y, scores, n_resamples=50, seed=0)
    assert interval.value == pytest.approx(100.0) and interval.low == pytest.approx(100.0)

    def buggy(y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(y_score[len(y_true)])  # IndexError: a bug, not an undefined metric

    with pytest.raises(IndexError):
        bootstrap_interval(buggy, y, scores, n_resamples=5, seed=0)


def test_spread_over_seeds() -> None:
    summary = spread([70.0, 72.0, 74.0])
    assert summary.mean == 72.0 and summary.std == pytest.approx(2.0) and summary.n == 3
    assert spread([5.0]).std == 0.0
