"""Few-shot core: episode sampling, vectorised prototype scoring, summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.errors import ProtocolError
from medtransfer.protocols.fewshot import episode_accuracies, sample_episodes, summarize


def _data(seed: int = 0, n_classes: int = 4, per_class: int = 30, dim: int = 16):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(labels)
    centres = rng.normal(0, 1.0, size=(n_classes, dim))
    features = (centres[labels] + rng.normal(0, 1.5, size=(len(labels), dim))).astype(np.float32)
    return features, labels


def _direct_accuracy(features: np.ndarray, support: np.ndarray, query: np.ndarray) -> float:
    """One episode the way the original did it: log_softmax(-squared distance), argmax."""
    n_way = support.shape[0]
    z_support = torch.from_numpy(features[support.reshape(-1)]).double()
    z_query = torch.from_numpy(features[query.reshape(-1)]).double()
    prototypes = z_support.view(n_way, support.shape[1], -1).mean(1)
    dists = torch.stack([((z_query - p) ** 2).sum(1) for p in prototypes], dim=1)
    scores = torch.log_softmax(-dists, dim=1)
    target = np.repeat(np.arange(n_way), query.shape[1])
    return float((scores.argmax(1).numpy() == target).mean())


def test_vectorised_accuracy_equals_direct_per_episode_computation() -> None:
    features, labels = _data()
    episodes = sample_episodes(labels, n_way=3, n_support=5, n_query=7, n_episodes=150, seed=4)
    fast = episode_accuracies(features, episodes, max_chunk_bytes=50_000)  # many small chunks
    direct = np.array(
        [
            _direct_accuracy(features, episodes.support[e], episodes.query[e])
            for e in range(episodes.n_episodes)
        ]
    )
    assert np.array_equal(fast, direct)
    assert 0.4 < fast.mean() < 1.0  # the data is learnable, not trivially perfect


def test_episodes_are_valid_draws() -> None:
    _, labels = _data(per_class=35)
    ep = sample_episodes(labels, n_way=2, n_support=20, n_query=15, n_episodes=50, seed=0)
    assert ep.support.shape == (50, 2, 20) and ep.query.shape == (50, 2, 15)
    for e in range(50):
        assert len(set(ep.classes[e])) == 2
        for w in range(2):
            rows = np.concatenate([ep.support[e, w], ep.query[e, w]])
            assert len(set(rows)) == 35  # without replacement
            assert (labels[rows] == ep.classes[e, w]).all()


def test_same_seed_same_episodes_whatever_the_backbone() -> None:
    _, labels = _data()
    torch.manual_seed(123)  # global RNG state must not matter
    a = sample_episodes(labels, n_way=2, n_support=5, n_query=5, n_episodes=20, seed=7)
    torch.nn.Linear(100, 100)  # consumes global RNG like building a random backbone
    np.random.rand(5)
    b = sample_episodes(labels, n_way=2, n_support=5, n_query=5, n_episodes=20, seed=7)
    c = sample_episodes(labels, n_way=2, n_support=5, n_query=5, n_episodes=20, seed=8)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)


def test_class_with_too_few_images_is_a_clear_error() -> None:
    labels = np.array([0] * 40 + [1] * 10)
    with pytest.raises(ProtocolError, match=r"35.*tb: 10"):
        sample_episodes(
            labels,
            n_way=2,
            n_support=20,
            n_query=15,
            n_episodes=5,
            seed=0,
            class_names=("normal", "tb"),
        )


def test_more_ways_than_classes_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="--n-way 5"):
        sample_episodes(
            np.repeat([0, 1], 50), n_way=5, n_support=1, n_query=1, n_episodes=1, seed=0
        )


def test_summary_uses_population_std_and_196() -> None:
    acc = np.array([0.5, 0.75, 1.0, 0.75])
    summary = summarize(acc)
    percent = acc * 100
    assert summary.accuracy == pytest.approx(75.0)
    assert summary.ci95 == pytest.approx(1.96 * np.std(percent, ddof=0) / math.sqrt(4))
    assert summary.line() == f"Test Acc = 75.00% +- {summary.ci95:4.2f}%"
