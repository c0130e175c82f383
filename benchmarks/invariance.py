"""Invariance speed: the original's per-pair loop against medtransfer's vectorised scores.

Same features (synthetic, D-dimensional: N clean images for the statistics, n images with
k views each), same covariance estimate Σ and precision P = Σ⁻¹ for all three (the sample
covariance plus 1e-6 · I, the original's, when N > D; Ledoit-Wolf when N <= D, where the
original's float32 Cholesky factor of P does not exist for these features):

(a) original: for every image and view, ``(μ − f) @ L`` in float32, ``F.cosine_similarity``
    and ``scipy.spatial.distance.mahalanobis`` in float64, one pair at a time
    (``invariances.py``);
(b) medtransfer, the original's numerics vectorised over every pair (``--preset original``);
(c) medtransfer, exact float64 scores from the covariance's spectrum (the default path;
    here with the same sample covariance).

Prints the median time of each on the scores over ``--repeat`` interleaved rounds (the
statistics, computed once by each, are timed apart), the ratios, and the largest
differences: (b) against (a), and (c) against a float64 per-pair reference on a subset of
pairs. Two cases by default: fewer clean images than dimensions (Montgomery-sized, N = 138:
the sample covariance is singular up to its ridge) and more (N = 4,000). Runs unchanged on
a GPU (``--device auto`` picks it).

    python benchmarks/invariance.py [--dim 2048] [--k 256] [--images 20] [--stats 138,4000]
                                    [--device auto] [--threads N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import mahalanobis

from medtransfer.analysis.invariance import (
    OriginalGeometry,
    fit_geometry,
    invariance_scores,
    original_geometry,
    original_scores,
)
from medtransfer.compute import device_name, resolve_device


def synthetic_features(
    n_stats: int, n_images: int, k: int, dim: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Statistics (N, D), clean (n, D) and views (n, k, D) float32 with a decaying spectrum
    (like pooled CNN features: non-negative, a few strong directions)."""
    rng = np.random.default_rng(seed)
    rank = min(dim, 256)
    basis = rng.normal(size=(rank, dim)) * (np.arange(1, rank + 1) ** -0.7)[:, None]

    def draw(count: int) -> np.ndarray:
        return np.abs(rng.normal(size=(count, rank)) @ basis + 0.05 * rng.normal(size=(count, dim)))

    stats, clean = draw(n_stats), draw(n_images)
    views = clean[:, None] + 0.3 * np.abs(draw(n_images * k)).reshape(n_images, k, dim)
    return stats.astype(np.float32), clean.astype(np.float32), views.astype(np.float32)


def original_loop(
    stats: np.ndarray, clean: np.ndarray, views: np.ndarray, inv_cov_matrix: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], OriginalGeometry, float]:
    """The original's per-pair loop given the precision P; returns ((S, L), the original's
    statistics (mean, P, float32 Cholesky factor) and the loop's seconds."""
    all_features = torch.from_numpy(stats)
    mean_feature = all_features.mean(dim=0)
    cholesky_matrix = torch.linalg.cholesky(torch.from_numpy(inv_cov_matrix).to(torch.float32))
    statistics = OriginalGeometry(mean_feature, inv_cov_matrix, cholesky_matrix, len(stats))
    n, k, _ = views.shape
    similarity, distance = torch.zeros((n, k)), torch.zeros((n, k))
    start = time.perf_counter()
    for i in range(n):
        clean_feature = torch.from_numpy(clean[i : i + 1])
        features = torch.from_numpy(views[i])
        a = (mean_feature - clean_feature) @ cholesky_matrix
        for j in range(k):
            b = (mean_feature - features[j]) @ cholesky_matrix
            similarity[i, j] = F.cosine_similarity(a, b, dim=-1).mean()
            distance[i, j] = mahalanobis(
                clean_feature[0].numpy(), features[j].numpy(), inv_cov_matrix
            )
    loop_s = time.perf_counter() - start
    return (similarity.double().numpy(), distance.double().numpy()), statistics, loop_s


def float64_reference(geometry, clean: np.ndarray, views: np.ndarray, pairs: int):
    """Per-pair float64 similarity and distance of the first ``pairs`` pairs of image 0.."""
    precision = geometry.precision()
    mean = geometry.mean
    out_s, out_d = [], []
    for i in range(len(clean)):
        for j in range(views.shape[1]):
            if len(out_s) == pairs:
                return np.array(out_s), np.array(out_d)
            x, f = clean[i].astype(np.float64), views[i, j].astype(np.float64)
            u, v = x - mean, f - mean
            out_s.append(
                u @ precision @ v / np.sqrt(u @ precision @ u) / np.sqrt(v @ precision @ v)
            )
            out_d.append(mahalanobis(x, f, precision))
    return np.array(out_s), np.array(out_d)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Any, device: str) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def measure(
    n_stats: int, n_images: int, k: int, dim: int, device: str, repeat: int = 1
) -> dict[str, Any]:
    """Time (a), (b) and (c) ``repeat`` times, interleaved (a shared machine's load then
    weighs on all three alike); report medians and the range of the per-round ratios."""
    stats, clean, views = synthetic_features(n_stats, n_images, k, dim)
    estimator = "sample" if n_stats > dim else "ledoit-wolf"
    start = time.perf_counter()
    geometry = fit_geometry(stats, estimator)
    exact_stats_s = time.perf_counter() - start
    if estimator == "sample":  # the original's own statistics
        start = time.perf_counter()
        precision = original_geometry(stats).precision
        loop_stats_s = time.perf_counter() - start
    else:
        precision, loop_stats_s = geometry.precision(), float("nan")
    _, original, _ = original_loop(stats, clean[:1], views[:1, :2], precision)
    original_scores(original, clean[:1], views[:1], device=device)  # warm-ups
    invariance_scores(geometry, clean[:1], views[:1], device=device)
    rounds: list[tuple[float, float, float]] = []
    for _ in range(repeat):
        (loop_s_arr, loop_d_arr), _, loop_s = original_loop(stats, clean, views, precision)
        (s_b, d_b), vector_s = _timed(
            lambda: original_scores(original, clean, views, device=device), device
        )
        (s_c, d_c), exact_s = _timed(
            lambda: invariance_scores(geometry, clean, views, device=device), device
        )
        rounds.append((loop_s, vector_s, exact_s))
    loop_s, vector_s, exact_s = (float(np.median(column)) for column in zip(*rounds, strict=True))
    ratios = [a / c for a, _, c in rounds]
    pairs = min(200, n_images * k)
    ref_s, ref_d = float64_reference(geometry, clean, views, pairs)
    return {
        "pairs": n_images * k,
        "estimator": estimator,
        "loop_s": loop_s,
        "vector_s": vector_s,
        "exact_s": exact_s,
        "loop_stats_s": loop_stats_s,
        "exact_stats_s": exact_stats_s,
        "ratio_vector": loop_s / vector_s,
        "ratio_exact": loop_s / exact_s,
        "ratio_exact_range": (min(ratios), max(ratios)),
        "repeat": repeat,
        "diff_vector_similarity": float(np.abs(s_b - loop_s_arr).max()),
        "diff_vector_distance": float(np.abs(d_b / loop_d_arr - 1).max()),
        "diff_exact_similarity": float(np.abs(s_c.ravel()[:pairs] - ref_s).max()),
        "diff_exact_distance": float(np.abs(d_c.ravel()[:pairs] / ref_d - 1).max()),
        "diff_exact_vs_loop_similarity": float(np.abs(s_c - loop_s_arr).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--stats", default="138,4000", help="clean images for the statistics")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for n_stats in (int(v) for v in args.stats.split(",")):
        r = measure(n_stats, args.images, args.k, args.dim, device, args.repeat)
        print(
            f"\nN = {n_stats} clean images, D = {args.dim}, {r['pairs']} pairs "
            f"({args.images} images x {args.k} views)"
        )
        print(
            f"  statistics, once: original (inv + Cholesky) {r['loop_stats_s']:.2f} s, "
            f"spectrum (c) {r['exact_stats_s']:.2f} s"
        )
        print(f"  (a) original per-pair loop:        {r['loop_s']:.2f} s")
        ratio = r["ratio_vector"]
        print(f"  (b) original numerics, vectorised: {r['vector_s']:.3f} s  -> {ratio:.0f}x")
        low, high = r["ratio_exact_range"]
        print(
            f"  (c) exact float64, vectorised:     {r['exact_s']:.3f} s  -> {r['ratio_exact']:.0f}x"
            f" (rounds: {low:.0f}x to {high:.0f}x)"
        )
        print(
            f"  (b) vs (a): max |dS| {r['diff_vector_similarity']:.1e}, "
            f"max |dL|/L {r['diff_vector_distance']:.1e}"
        )
        print(
            f"  (c) vs float64 per-pair reference: max |dS| {r['diff_exact_similarity']:.1e}, "
            f"max |dL|/L {r['diff_exact_distance']:.1e}"
        )
        print(
            f"  (c) vs (a) (the original's float32 whitening): max |dS| "
            f"{r['diff_exact_vs_loop_similarity']:.1e}"
        )


if __name__ == "__main__":
    main()
