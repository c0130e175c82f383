"""Occlusion saliency and attentive diffusion (docs/original-study.md#saliency).

An image ``(3, H, W)``, already in the network's normalised input space, is occluded by a
``patch`` × ``patch`` square of ``value`` (0: the normalised mean colour for ImageNet
statistics, black for unnormalised input) at every window position. Each position (i, j)
scores the relative change of the pooled feature, ``o_ij = ‖f − f_occ‖₂ / ‖f‖₂``; every
pixel of the window receives the score; the accumulated map is divided by ``patch²`` and
cropped to the pixels covered by exactly ``patch²`` windows, rows and columns
``[patch − 1, H − patch]``: a ``(H − 2·patch + 2, W − 2·patch + 2)`` map whose pixels are
the mean relative feature change over the windows containing them (224 × 224 for the
original's 242-px image and 10-px patch).

With ``stride`` > 1 only every ``stride``-th position (and the last) is scored; the scores
of the positions in between are linearly interpolated before accumulation. The map is then
an approximation of the stride-1 map (exact at stride 1).

Attentive diffusion is the percentage of map pixels strictly above the map's mean.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from medtransfer.errors import ConfigError

#: ``features(images (B, 3, H, W)) -> (B, D)``: pooled features of a batch.
FeatureFn = Callable[[Tensor], Tensor]
#: ``progress(done, total, scores)``: called after every batch with the flat scores so far.
ProgressFn = Callable[[int, int, np.ndarray], None]


def window_positions(size: int, patch: int, stride: int = 1) -> np.ndarray:
    """Top (or left) corners of the scored windows along one axis, (n,) int64: ``0, stride,
    2·stride, ...`` and always the last position ``size − patch``."""
    check_geometry(size, patch, stride)
    positions = np.arange(0, size - patch + 1, stride, dtype=np.int64)
    if positions[-1] != size - patch:
        positions = np.append(positions, size - patch)
    return positions


def check_geometry(size: int, patch: int, stride: int) -> None:
    """Raise ConfigError unless a ``patch`` at ``stride`` leaves a map on a ``size`` image."""
    if patch < 1 or stride < 1:
        raise ConfigError(f"--patch ({patch}) and --stride ({stride}) must be at least 1.")
    if size < 2 * patch - 1:
        raise ConfigError(
            f"--image-size {size} is too small for a {patch}-px patch: the map keeps the pixels "
            f"covered by patch² windows, which needs an image of at least {2 * patch - 1} px."
        )


def map_size(size: int, patch: int) -> int:
    """Side of the map of a ``size`` image occluded by ``patch`` (224 for 242 and 10)."""
    return size - 2 * patch + 2


def occlusion_scores(
    features: FeatureFn,
    image: Tensor,
    *,
    patch: int = 10,
    stride: int = 1,
    value: float = 0.0,
    batch_size: int = 64,
    done: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Relative feature change for every scored window position.

    Args:
        features: the network from normalised images to pooled features; it is called
            under ``torch.inference_mode`` on batches of up to ``batch_size`` occluded
            copies (and once on ``image`` alone for the reference feature).
        image: ``(3, H, W)`` float, normalised, on the network's device.
        done: scores of an interrupted run, ``(n_rows * n_cols,)`` float64 with NaN where
            not computed yet; scoring resumes at the first NaN.
        progress: called after every batch (see :data:`ProgressFn`).

    Returns:
        ``(n_rows, n_cols)`` float64, ``n_rows = len(window_positions(H, patch, stride))``.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    height, width = image.shape[1:]
    rows = window_positions(height, patch, stride)
    cols = window_positions(width, patch, stride)
    top = np.repeat(rows, len(cols))
    left = np.tile(cols, len(rows))
    total = len(top)
    scores = np.full(total, np.nan) if done is None else np.array(done, dtype=np.float64)
    if scores.shape != (total,):
        raise ValueError(f"done has shape {scores.shape}, expected ({total},)")
    device = image.device
    pixel_rows = torch.arange(height, device=device)
    pixel_cols = torch.arange(width, device=device)
    with torch.inference_mode():
        reference = features(image.unsqueeze(0)).double().cpu()[0]
        norm = torch.linalg.vector_norm(reference)
        start = int(np.argmax(np.isnan(scores))) if np.isnan(scores).any() else total
        for begin in range(start, total, batch_size):
            stop = min(begin + batch_size, total)
            i = torch.as_tensor(top[begin:stop], device=device)[:, None]
            j = torch.as_tensor(left[begin:stop], device=device)[:, None]
            in_rows = (pixel_rows >= i) & (pixel_rows < i + patch)  # (B, H)
            in_cols = (pixel_cols >= j) & (pixel_cols < j + patch)  # (B, W)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
            occluded = image.unsqueeze(0).masked_fill(window, value)
            changed = features(occluded).double().cpu()
            change = torch.linalg.vector_norm(reference - changed, dim=1) / norm
            scores[begin:stop] = change.numpy()
            if progress is not None:
                progress(stop, total, scores)
    return scores.reshape(len(rows), len(cols))


def _interpolation(positions: np.ndarray, size: int, patch: int) -> np.ndarray:
    """Linear interpolation weights from scored positions to every position, (n_all, n)."""
    every = np.arange(size - patch + 1)
    return np.stack(
        [np.interp(every, positions, np.eye(len(positions))[m]) for m in range(len(positions))],
        axis=1,
    )


def saliency_map(
    scores: np.ndarray, image_size: tuple[int, int], *, patch: int = 10, stride: int = 1
) -> np.ndarray:
    """The cropped occlusion map of :func:`occlusion_scores`' output (module docstring).

    Args:
        scores: ``(n_rows, n_cols)`` float.
        image_size: ``(H, W)`` of the occluded image.

    Returns:
        ``(H − 2·patch + 2, W − 2·patch + 2)`` float64.
    """
    height, width = image_size
    rows = window_positions(height, patch, stride)
    cols = window_positions(width, patch, stride)
    if scores.shape != (len(rows), len(cols)):
        raise ValueError(f"scores have shape {scores.shape}, expected {(len(rows), len(cols))}")
    every = np.asarray(scores, dtype=np.float64)
    if stride > 1:
        every = _interpolation(rows, height, patch) @ every @ _interpolation(cols, width, patch).T
    sums = sliding_window_view(every, (patch, patch)).sum(axis=(-2, -1))
    return sums / patch**2


def attentive_diffusion(saliency: np.ndarray) -> float:
    """Percentage of map pixels strictly above the map's mean (docs/original-study.md#saliency)."""
    values = np.asarray(saliency, dtype=np.float64)
    return float(100.0 * np.count_nonzero(values > values.mean()) / values.size)
