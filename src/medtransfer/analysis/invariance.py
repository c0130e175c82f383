"""Feature invariance: Mahalanobis-whitened cosine similarity and Mahalanobis distance.

For a clean feature x, the features f_1..f_k of its k transformed views (or of another
view of the same patient), the mean μ and the precision P = Σ⁻¹ of the clean features of
the dataset (docs/original-study.md#invariance):

* similarity ``S_j = (x − μ)ᵀ P (f_j − μ) / (√((x − μ)ᵀ P (x − μ)) · √((f_j − μ)ᵀ P (f_j − μ)))``,
  the cosine of the whitened, centred vectors ``(x − μ) L`` and ``(f_j − μ) L`` (P = L Lᵀ);
* distance ``L_j = √((x − f_j)ᵀ P (x − f_j))``.

Σ is estimated by Ledoit-Wolf (default), OAS, or the sample covariance plus 1e-6 · I (the
original): with fewer images than feature dimensions the sample covariance is singular and
only the ridge makes it invertible (docs/original-study.md#defect-e39). Every estimator has
the form Σ = (1 − δ) S + (δ τ + ε) I, S the empirical covariance, τ its mean eigenvalue;
:class:`Geometry` keeps a factor of P (S's eigenvectors and one value for the rest of the
space when N ≤ D, the inverse Cholesky factor otherwise), so all scores come from one
projection of every vector onto at most min(N, D) directions, in float64, for every image
and parameter value at once.

:func:`original_geometry` and :func:`original_scores` reproduce the original's numerics
instead (float32 mean, ``np.cov`` + 1e-6 · I, ``np.linalg.inv``, float32 Cholesky factor of
P for the similarity, float64 P for the distance), vectorised; :func:`original_draws`
reproduces its image sampling and batch composition.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, SubsetRandomSampler

from medtransfer.errors import ConfigError

COV_ESTIMATORS: tuple[str, ...] = ("ledoit-wolf", "oas", "sample")
#: The original's ridge on the sample covariance.
SAMPLE_RIDGE = 1e-6
#: F.cosine_similarity's default eps.
COSINE_EPS = 1e-8
#: The original's covariance subsample: all images below this count, else max(1000, 10 %).
ORIGINAL_SUBSAMPLE_FROM = 1000
_CHUNK_ELEMENTS = 1 << 18  # small blocks: the elementwise passes stay in the CPU cache


@dataclass(frozen=True)
class Geometry:
    """The Mahalanobis geometry of a covariance estimate Σ, through a factor of its precision.

    P = Σ⁻¹ = F diag(w) Fᵀ + (I − F Fᵀ) / c: ``factor`` F (D, r) float64 and ``weights`` w
    (r,). With fewer images than dimensions (r < D), F holds the orthonormal eigenvectors of
    the empirical covariance, w the inverse eigenvalues of Σ on them, and c (``floor``) is
    Σ's eigenvalue on the rest of the space; otherwise F = L⁻ᵀ for the Cholesky factor
    Σ = L Lᵀ, w = 1 and the floor term is absent. ``mean`` μ (D,) float64; ``spectrum``
    every eigenvalue of Σ, ascending; ``estimator``, ``shrinkage`` δ, ``ridge`` ε and
    ``n_samples`` N say how it was estimated.
    """

    mean: np.ndarray
    factor: np.ndarray
    weights: np.ndarray
    floor: float
    spectrum: np.ndarray
    estimator: str
    shrinkage: float
    ridge: float
    n_samples: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def full_rank(self) -> bool:
        """Whether the factor spans the whole space (no floor term)."""
        return self.factor.shape[1] == self.dim

    def precision(self) -> np.ndarray:
        """P = Σ⁻¹ as a dense (D, D) float64 matrix."""
        f = self.factor
        dense = (f * self.weights) @ f.T
        if not self.full_rank:
            dense += (np.eye(self.dim) - f @ f.T) / self.floor
        return dense

    def covariance(self) -> np.ndarray:
        """Σ as a dense (D, D) float64 matrix."""
        if self.full_rank:
            return np.linalg.inv(self.precision())
        f = self.factor
        return (f / self.weights) @ f.T + self.floor * (np.eye(self.dim) - f @ f.T)

    def describe(self) -> dict[str, Any]:
        """The estimate's parameters and conditioning, for records."""
        return {
            "estimator": self.estimator,
            "shrinkage": self.shrinkage,
            "ridge": self.ridge,
            "n_samples": self.n_samples,
            "dim": self.dim,
            "eigenvalue_min": float(self.spectrum[0]),
            "eigenvalue_max": float(self.spectrum[-1]),
            "condition_number": float(self.spectrum[-1] / self.spectrum[0]),
        }


def _shrinkage(features: np.ndarray, estimator: str) -> float:
    from sklearn.covariance import ledoit_wolf_shrinkage, oas

    if estimator == "ledoit-wolf":
        return float(ledoit_wolf_shrinkage(features))
    return float(oas(features)[1])


def fit_geometry(features: np.ndarray, estimator: str = "ledoit-wolf") -> Geometry:
    """Mean and covariance of ``features`` (N, D) under ``estimator`` (module docstring).

    ``sample`` is the unbiased covariance plus 1e-6 · I; ``ledoit-wolf`` and ``oas`` are
    scikit-learn's shrinkage towards τ I of the biased (1/N) covariance.

    Raises:
        ConfigError: an unknown estimator, fewer than two samples, or a covariance that is
            not positive definite.
    """
    from scipy.linalg import cholesky, solve_triangular

    if estimator not in COV_ESTIMATORS:
        raise ConfigError(f"Unknown --cov {estimator!r}; use one of {', '.join(COV_ESTIMATORS)}.")
    x = np.asarray(features, dtype=np.float64)
    n, dim = x.shape
    if n < 2:
        raise ConfigError(f"A covariance needs at least 2 images; got {n}.")
    mean = x.mean(axis=0)
    centred = x - mean
    sample = estimator == "sample"
    scale = 1.0 / (n - 1) if sample else 1.0 / n
    shrinkage = 0.0 if sample else _shrinkage(x, estimator)
    ridge = SAMPLE_RIDGE if sample else 0.0
    singular_error = ConfigError(
        f"The {estimator} covariance of {n} images in {dim} dimensions is not positive "
        "definite; use --cov ledoit-wolf."
    )
    if n <= dim:
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        empirical = singular**2 * scale
        floor = shrinkage * float(empirical.sum()) / dim + ridge
        eigenvalues = (1.0 - shrinkage) * empirical + floor
        if floor <= 0:
            raise singular_error
        spectrum = np.sort(np.concatenate([eigenvalues, np.full(dim - len(eigenvalues), floor)]))
        return Geometry(
            mean, vt.T, 1.0 / eigenvalues, floor, spectrum, estimator, shrinkage, ridge, n
        )
    empirical = centred.T @ centred * scale
    floor = shrinkage * float(np.trace(empirical)) / dim + ridge
    covariance = (1.0 - shrinkage) * empirical + floor * np.eye(dim)
    try:
        lower = cholesky(covariance, lower=True)
    except np.linalg.LinAlgError:
        raise singular_error from None
    factor = solve_triangular(lower, np.eye(dim), lower=True).T  # L⁻ᵀ: P = L⁻ᵀ L⁻¹
    spectrum = np.linalg.eigvalsh(covariance)
    return Geometry(mean, factor, np.ones(dim), 0.0, spectrum, estimator, shrinkage, ridge, n)


def _chunks(n: int, k: int, dim: int) -> list[tuple[int, int]]:
    """(start, stop) image ranges whose views hold about 2**18 numbers each (at least one
    image)."""
    step = max(1, _CHUNK_ELEMENTS // max(1, k * dim))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def invariance_scores(
    geometry: Geometry, clean: np.ndarray, views: np.ndarray, *, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity and distance of every view to its clean image.

    Args:
        clean: ``(n, D)`` features x_i.
        views: ``(n, k, D)`` features f_ij.

    Returns:
        ``(similarity, distance)``, each ``(n, k)`` float64 (module docstring).
    """
    clean, views = _check_shapes(clean, views, geometry.dim)
    n, k, dim = views.shape
    kw = {"dtype": torch.float64, "device": device}
    mean = torch.as_tensor(geometry.mean, **kw)
    basis = torch.as_tensor(geometry.factor, **kw)
    inverse = torch.as_tensor(geometry.weights, **kw)
    rest = 0.0 if geometry.full_rank else 1.0 / geometry.floor

    def form(p: torch.Tensor, q: torch.Tensor, pb: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
        """pᵀ P q from the vectors and their projections on the basis."""
        inside = (pb * qb * inverse).sum(-1)
        if rest == 0.0:
            return inside
        return inside + ((p * q).sum(-1) - (pb * qb).sum(-1)) * rest

    similarity = np.empty((n, k))
    distance = np.empty((n, k))
    for start, stop in _chunks(n, k, dim):
        u = torch.as_tensor(clean[start:stop], **kw) - mean  # (c, D)
        v = torch.as_tensor(views[start:stop], **kw) - mean  # (c, k, D)
        ub, vb = u @ basis, v @ basis
        uu = form(u, u, ub, ub)[:, None]
        vv = form(v, v, vb, vb)
        uv = form(u[:, None], v, ub[:, None], vb)
        norms = torch.sqrt(uu.clamp_min(0)) * torch.sqrt(vv.clamp_min(0))
        similarity[start:stop] = (uv / norms.clamp_min(COSINE_EPS)).cpu().numpy()
        d, db = u[:, None] - v, ub[:, None] - vb
        distance[start:stop] = torch.sqrt(form(d, d, db, db).clamp_min(0)).cpu().numpy()
    return similarity, distance


def _check_shapes(clean: np.ndarray, views: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    clean, views = np.asarray(clean), np.asarray(views)
    if clean.ndim != 2 or views.ndim != 3 or views.shape[0] != clean.shape[0]:
        raise ValueError(
            f"expected clean (n, D) and views (n, k, D); got {clean.shape}, {views.shape}"
        )
    if clean.shape[1] != dim or views.shape[2] != dim:
        raise ValueError(f"features of width {clean.shape[1]}/{views.shape[2]}, geometry {dim}")
    return clean, views


@dataclass(frozen=True)
class OriginalGeometry:
    """The original's statistics: ``mean`` (D,) float32 (a torch mean), ``precision`` P
    (D, D) float64 = inv(np.cov + 1e-6 · I), ``cholesky`` L (D, D) float32 with
    P ≈ L Lᵀ (the Cholesky factor of P cast to float32)."""

    mean: torch.Tensor
    precision: np.ndarray
    cholesky: torch.Tensor
    n_samples: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def describe(self) -> dict[str, Any]:
        spectrum = np.linalg.eigvalsh(self.precision)
        return {
            "estimator": "sample",
            "numerics": "original (float32 Cholesky factor of the precision)",
            "shrinkage": 0.0,
            "ridge": SAMPLE_RIDGE,
            "n_samples": self.n_samples,
            "dim": self.dim,
            "eigenvalue_min": float(1.0 / spectrum[-1]),
            "eigenvalue_max": float(1.0 / spectrum[0]),
            "condition_number": float(spectrum[-1] / spectrum[0]),
        }


def original_geometry(features: np.ndarray) -> OriginalGeometry:
    """The original's mean, precision and Cholesky factor of ``features`` (N, D).

    Raises:
        ConfigError: the float32 Cholesky factorisation fails (P is not positive definite
            in float32: the covariance is singular up to the ridge,
            docs/original-study.md#defect-e39).
    """
    feats = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if len(feats) < 2:
        raise ConfigError(f"A covariance needs at least 2 images; got {len(feats)}.")
    mean = feats.mean(dim=0)
    cov = np.cov(feats.numpy(), rowvar=False) + SAMPLE_RIDGE * np.eye(feats.shape[1])
    precision = np.linalg.inv(cov)
    try:
        cholesky = torch.linalg.cholesky(torch.from_numpy(precision).to(torch.float32))
    except torch.linalg.LinAlgError as exc:
        raise ConfigError(
            f"The original's float32 Cholesky factor of the precision matrix does not exist "
            f"for these {len(feats)} features of width {feats.shape[1]} ({exc}); the sample "
            "covariance is singular up to its 1e-6 ridge. Use --cov ledoit-wolf."
        ) from None
    return OriginalGeometry(mean, precision, cholesky, len(feats))


def original_scores(
    geometry: OriginalGeometry, clean: np.ndarray, views: np.ndarray, *, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`invariance_scores` in the original's numerics: the similarity of the float32
    vectors ``(μ − x) L`` and ``(μ − f_j) L`` (``F.cosine_similarity``), the distance
    ``√(dᵀ P d)`` in float64 of the float32 difference d = x − f_j (SciPy's mahalanobis).
    Returns ``(similarity, distance)``, each ``(n, k)`` float64."""
    clean, views = _check_shapes(clean, views, geometry.dim)
    n, k, dim = views.shape
    mean = geometry.mean.to(device)
    chol = geometry.cholesky.to(device)
    precision = torch.as_tensor(geometry.precision, dtype=torch.float64, device=device)
    similarity = np.empty((n, k))
    distance = np.empty((n, k))
    for start, stop in _chunks(n, k, dim):
        x = torch.as_tensor(clean[start:stop], dtype=torch.float32).to(device)
        f = torch.as_tensor(views[start:stop], dtype=torch.float32).to(device)
        a = (mean - x) @ chol  # (c, D)
        b = (mean - f) @ chol  # (c, k, D)
        similarity[start:stop] = F.cosine_similarity(a[:, None], b, dim=-1).double().cpu().numpy()
        d = (x[:, None] - f).double()
        distance[start:stop] = torch.sqrt(((d @ precision) * d).sum(-1)).cpu().numpy()
    return similarity, distance


@dataclass(frozen=True)
class Summary:
    """What a run reports: ``similarity`` and ``distance`` (the mean over the ``included``
    parameter values of the per-value mean over images), the per-value ``curve_*`` (k,)
    (NaN-ignoring means over images, as the original), and ``nan`` (pairs without a score)."""

    similarity: float
    distance: float
    curve_similarity: np.ndarray
    curve_distance: np.ndarray
    included: np.ndarray
    nan: int


def summarize(similarity: np.ndarray, distance: np.ndarray, *, exclude: int | None) -> Summary:
    """Aggregate ``(n, k)`` scores; ``exclude``: a parameter index left out of the mean (the
    identity view, which the original averaged in, docs/original-study.md#defect-e42)."""
    k = similarity.shape[1]
    included = np.array([j for j in range(k) if j != exclude], dtype=np.int64)
    if not len(included):
        raise ConfigError("Only the identity view is left to average; use a larger --k.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a value with no score at all: NaN
        curve_s = np.nanmean(similarity, axis=0)
        curve_d = np.nanmean(distance, axis=0)
    return Summary(
        float(np.mean(curve_s[included])),
        float(np.mean(curve_d[included])),
        curve_s,
        curve_d,
        included,
        int(np.count_nonzero(np.isnan(similarity) | np.isnan(distance))),
    )


@dataclass(frozen=True)
class OriginalDraws:
    """The original's draws over a pool of N images: the index batches of the covariance
    pass in the order the original's DataLoader gave them, and the evaluated items
    (image indices for synthetic transforms, pair indices for multi-view)."""

    statistic_batches: list[np.ndarray]
    items: np.ndarray


def original_draws(
    n_pool: int, *, batch_size: int, num_images: int, n_pairs: int | None = None
) -> OriginalDraws:
    """The original's sampling (docs/original-study.md#invariance), on seeds 0.

    ``np.random.seed(0)`` and ``torch.manual_seed(0)``; the covariance pass reads every image
    in order when N < 1000, else ``np.random.choice(N, max(1000, int(0.1 N)))`` (with
    replacement) through a ``SubsetRandomSampler``, in batches of ``batch_size``; then
    ``np.random.choice(N, num_images)`` images (synthetic transforms) or, with ``n_pairs``,
    ``num_images`` first elements of fresh shuffled batch-1 loaders over the pairs
    (multi-view). The same DataLoader machinery runs on index lists, so the random streams
    are consumed exactly as the original consumed them (with this torch version). The
    global random states are restored afterwards.
    """
    numpy_rng = np.random.RandomState(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if n_pool < ORIGINAL_SUBSAMPLE_FROM:
            loader = DataLoader(range(n_pool), batch_size=batch_size)
        else:
            chosen = numpy_rng.choice(np.arange(n_pool), max(1000, int(0.1 * n_pool)))
            loader = DataLoader(
                range(n_pool), batch_size=batch_size, sampler=SubsetRandomSampler(chosen.tolist())
            )
        batches = [np.asarray(batch, dtype=np.int64) for batch in loader]
        if n_pairs is None:
            items = numpy_rng.choice(np.arange(n_pool), num_images)
        else:
            pairs = DataLoader(range(n_pairs), batch_size=1, shuffle=True)
            items = np.array([int(next(iter(pairs))[0]) for _ in range(num_images)])
    return OriginalDraws(batches, np.asarray(items, dtype=np.int64))
