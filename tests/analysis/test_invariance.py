"""Invariance scores against plain per-pair references (docs/original-study.md#invariance):
the covariance estimators against scikit-learn and NumPy, the vectorised scores against a
loop over pairs with SciPy's mahalanobis, the original's numerics and sampling against
literal transcriptions of its code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import OAS, LedoitWolf
from torch.utils.data import DataLoader, SubsetRandomSampler

from medtransfer.analysis.invariance import (
    COV_ESTIMATORS,
    fit_geometry,
    invariance_scores,
    original_draws,
    original_geometry,
    original_scores,
    summarize,
)
from medtransfer.errors import ConfigError


def features(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 1.0).astype(np.float32)


def clean_and_views(dim: int, n: int = 5, k: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    clean = features(n, dim, seed)
    views = clean[:, None] + rng.normal(scale=0.5, size=(n, k, dim)).astype(np.float32)
    views[:, 0] = clean  # an identity view
    return clean, views


def per_pair(mean: np.ndarray, precision: np.ndarray, clean: np.ndarray, views: np.ndarray):
    """Similarity and distance, one pair at a time, straight from the formulas."""
    n, k, _ = views.shape
    similarity, distance = np.empty((n, k)), np.empty((n, k))
    for i in range(n):
        x = clean[i].astype(np.float64) - mean
        for j in range(k):
            f = views[i, j].astype(np.float64) - mean
            similarity[i, j] = (
                x @ precision @ f / np.sqrt(x @ precision @ x) / np.sqrt(f @ precision @ f)
            )
            distance[i, j] = mahalanobis(
                clean[i].astype(np.float64), views[i, j].astype(np.float64), precision
            )
    return similarity, distance


@pytest.mark.parametrize("estimator", COV_ESTIMATORS)
@pytest.mark.parametrize(("n", "dim"), [(12, 40), (90, 16)], ids=["fewer-images", "more-images"])
def test_scores_equal_the_per_pair_reference(estimator: str, n: int, dim: int) -> None:
    stats = features(n, dim, 2)
    geometry = fit_geometry(stats, estimator)
    expected_cov = {
        "ledoit-wolf": lambda: LedoitWolf().fit(stats.astype(np.float64)).covariance_,
        "oas": lambda: OAS().fit(stats.astype(np.float64)).covariance_,
        "sample": lambda: np.cov(stats.astype(np.float64), rowvar=False) + 1e-6 * np.eye(dim),
    }[estimator]()
    np.testing.assert_allclose(geometry.covariance(), expected_cov, atol=1e-9, rtol=1e-9)
    clean, views = clean_and_views(dim)
    similarity, distance = invariance_scores(geometry, clean, views)
    ref_s, ref_d = per_pair(
        stats.astype(np.float64).mean(0), np.linalg.inv(expected_cov), clean, views
    )
    assert np.abs(similarity - ref_s).max() <= 1e-6
    assert np.abs(distance - ref_d).max() <= 1e-6 * max(1.0, ref_d.max())
    np.testing.assert_allclose(similarity[:, 0], 1.0, atol=1e-9)
    np.testing.assert_allclose(distance[:, 0], 0.0, atol=1e-6)
    assert geometry.describe()["condition_number"] >= 1


def test_the_sample_covariance_of_few_images_is_dominated_by_its_ridge() -> None:
    geometry = fit_geometry(features(10, 64), "sample")
    assert geometry.describe()["eigenvalue_min"] == pytest.approx(1e-6)
    shrunk = fit_geometry(features(10, 64), "ledoit-wolf")
    assert shrunk.describe()["condition_number"] < geometry.describe()["condition_number"] / 1e3


def test_bad_estimates_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="Unknown --cov 'median'"):
        fit_geometry(features(5, 3), "median")
    with pytest.raises(ConfigError, match="at least 2 images"):
        fit_geometry(features(1, 3), "ledoit-wolf")
    with pytest.raises(ConfigError, match="at least 2 images"):
        original_geometry(features(1, 3))


def original_loop(stats: np.ndarray, clean: np.ndarray, views: np.ndarray):
    """The original's invariances.py from the covariance on, for features already computed."""
    all_features = torch.from_numpy(stats)
    mean_feature = all_features.mean(dim=0)
    cov_matrix = np.cov(all_features, rowvar=False)
    cov_matrix = cov_matrix + 1e-6 * np.eye(cov_matrix.shape[0])
    inv_cov_matrix = np.linalg.inv(cov_matrix)
    cholesky_matrix = torch.linalg.cholesky(torch.from_numpy(inv_cov_matrix).to(torch.float32))
    n, k, _ = views.shape
    similarity, distance = torch.zeros((n, k)), torch.zeros((n, k))
    for i in range(n):
        clean_feature = torch.from_numpy(clean[i : i + 1])
        feats = torch.from_numpy(views[i])
        a = (mean_feature - clean_feature) @ cholesky_matrix
        for j in range(k):
            b = (mean_feature - feats[j]) @ cholesky_matrix
            similarity[i, j] = F.cosine_similarity(a, b, dim=-1).mean()
            distance[i, j] = mahalanobis(clean_feature[0].numpy(), feats[j].numpy(), inv_cov_matrix)
    return similarity.double().numpy(), distance.double().numpy()


def test_original_numerics_equal_the_original_loop() -> None:
    stats = features(60, 12, 3)
    clean, views = clean_and_views(12, n=4, k=3)
    similarity, distance = original_scores(original_geometry(stats), clean, views)
    ref_s, ref_d = original_loop(stats, clean, views)
    np.testing.assert_allclose(similarity, ref_s, atol=1e-6)
    np.testing.assert_allclose(distance, ref_d, rtol=1e-6)


def test_summary_leaves_the_identity_out_unless_asked_and_ignores_missing_scores() -> None:
    similarity = np.array([[1.0, 0.2, 0.4], [1.0, np.nan, 0.6]])
    distance = np.array([[0.0, 2.0, 4.0], [0.0, 3.0, np.nan]])
    fixed = summarize(similarity, distance, exclude=0)
    assert fixed.similarity == pytest.approx((0.2 + 0.5) / 2)
    assert fixed.distance == pytest.approx((2.5 + 4.0) / 2)
    assert fixed.nan == 2 and list(fixed.included) == [1, 2]
    original = summarize(similarity, distance, exclude=None)
    assert original.similarity == pytest.approx((1.0 + 0.2 + 0.5) / 3)
    with pytest.raises(ConfigError, match="identity"):
        summarize(similarity[:, :1], distance[:, :1], exclude=0)


@pytest.fixture(autouse=True)
def _global_random_states_restored():
    """The literal transcriptions below seed NumPy's and torch's global generators."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    np.random.set_state(state)


def literal_original_sampling(n_pool: int, batch_size: int, num_images: int):
    """The original's statements, global seeds and all."""
    np.random.seed(0)
    torch.manual_seed(0)
    if n_pool < 1000:
        loader = DataLoader(list(range(n_pool)), batch_size=batch_size)
    else:
        random_idx = np.random.choice(np.arange(n_pool), max(1000, int(0.1 * n_pool)))
        loader = DataLoader(
            list(range(n_pool)), batch_size=batch_size, sampler=SubsetRandomSampler(random_idx)
        )
    batches = [b.numpy() for b in loader]
    return batches, np.random.choice(np.arange(n_pool), num_images)


@pytest.mark.parametrize("n_pool", [300, 12000])
def test_original_draws_consume_the_random_streams_as_the_original(n_pool: int) -> None:
    state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    draws = original_draws(n_pool, batch_size=256, num_images=100)
    assert torch.equal(torch.random.get_rng_state(), state)  # global states left alone
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    batches, images = literal_original_sampling(n_pool, 256, 100)
    assert len(draws.statistic_batches) == len(batches)
    for ours, theirs in zip(draws.statistic_batches, batches, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(draws.items, images)
    every = np.concatenate(draws.statistic_batches)
    if n_pool < 1000:
        np.testing.assert_array_equal(every, np.arange(n_pool))
    else:
        assert len(every) == 1200 and len(np.unique(every)) < 1200  # with replacement


def test_original_pair_draws_take_the_first_item_of_fresh_shuffled_loaders() -> None:
    draws = original_draws(40, batch_size=16, num_images=30, n_pairs=7)
    np.random.seed(0)
    torch.manual_seed(0)
    list(DataLoader(list(range(40)), batch_size=16))
    loader = DataLoader(list(range(7)), batch_size=1, shuffle=True)
    expected = [int(next(iter(loader))[0]) for _ in range(30)]
    assert draws.items.tolist() == expected
    assert len(set(expected)) < 30  # independent draws repeat
