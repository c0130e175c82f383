"""The elastic deformation the original's ``deform`` invariance used, without OpenCV.

The original called albumentations' ``ElasticTransform(sigma=σ, always_apply=True,
approximate=True)`` with every other argument at its default (docs/original-study.md#invariance).
In the albumentations 1.x releases of 2022 that is, for an image of H × W pixels:

1. a random affine warp: three points around the centre, ``c = (H // 2, W // 2)`` and
   ``q = min(H, W) // 3``, namely ``(c0 + q, c1 + q)``, ``(c0 + q, c1 − q)``, ``(c0 − q, c1 − q)``
   read as (x, y), each moved by U(−alpha_affine, alpha_affine) with ``alpha_affine = 50``
   pixels; the image is warped by the affine map taking the old points to the new ones;
2. a displacement field: ``dx, dy`` of U(−1, 1) noise per pixel, each smoothed by a 17 × 17
   Gaussian of standard deviation σ and multiplied by ``alpha = 1``;
3. the warped image sampled at ``(x + dx, y + dy)``.

Both samplings are bilinear with reflect-101 borders (``dcb|abcdefgh|gfe``); the random
numbers come, in this order, from one ``numpy.random.RandomState``: the 3 × 2 affine
offsets, then ``dx``, then ``dy``. OpenCV quantises bilinear weights to 1/32 pixel; this
module does not, so values can differ from OpenCV's by about one grey level.

With alpha = 1 and σ ≥ 10 the smoothed field moves pixels by far less than a pixel: the
deformation is, in effect, the random affine warp of step 1.

albumentations itself is not used: it pulls in OpenCV (a 61 MB wheel) for this one
transform, its 2.x releases changed these defaults (no affine step, Gaussian noise), and
the original's result depended on the version installed (docs/original-study.md#defect-e42).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: albumentations 1.x defaults of ElasticTransform.
ALPHA = 1.0
ALPHA_AFFINE = 50.0
KERNEL_SIZE = 17


def _affine_points(height: int, width: int) -> np.ndarray:
    """The three source points of step 1, (3, 2) float64 as (x, y)."""
    c0, c1 = height // 2, width // 2
    q = min(height, width) // 3
    return np.array([[c0 + q, c1 + q], [c0 + q, c1 - q], [c0 - q, c1 - q]], dtype=np.float64)


def affine_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 × 3 matrix A with ``A @ [x, y, 1] = target`` for each of the three ``source``
    points, both (3, 2)."""
    ones = np.ones((3, 1))
    return np.linalg.solve(np.hstack([source, ones]), target).T


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) sampled bilinearly at float coordinates ``x``, ``y`` (H', W'),
    reflect-101 outside; returns (H', W', C) float64."""
    coords = np.stack([y, x])
    planes = [
        ndimage.map_coordinates(image[..., c].astype(np.float64), coords, order=1, mode="mirror")
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=-1)


def _smoothed_noise(noise: np.ndarray, sigma: float) -> np.ndarray:
    """``noise`` (H, W) smoothed by a 17-tap Gaussian of ``sigma`` along both axes (reflect-101)."""
    offsets = np.arange(KERNEL_SIZE) - KERNEL_SIZE // 2
    kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel /= kernel.sum()
    rows = ndimage.correlate1d(noise, kernel, axis=0, mode="mirror")
    return ndimage.correlate1d(rows, kernel, axis=1, mode="mirror")


def elastic_deform(
    image: np.ndarray,
    sigma: float,
    random_state: np.random.RandomState,
    *,
    alpha: float = ALPHA,
    alpha_affine: float = ALPHA_AFFINE,
) -> np.ndarray:
    """Deform ``image`` (H, W) or (H, W, C), uint8 or float, as the module docstring says.

    Returns an array of the same shape and dtype (uint8 results are rounded and clipped).
    """
    array = np.asarray(image)
    planar = array.ndim == 2
    work = array[..., None] if planar else array
    height, width = work.shape[:2]
    source = _affine_points(height, width)
    offsets = random_state.uniform(-alpha_affine, alpha_affine, size=(3, 2))
    target = source.astype(np.float32) + offsets.astype(np.float32)
    matrix = np.vstack([affine_from_points(source, target.astype(np.float64)), [0, 0, 1]])
    inverse = np.linalg.inv(matrix)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    warped = _sample(
        work,
        inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2],
        inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2],
    )
    if array.dtype == np.uint8:  # OpenCV's warp returns an 8-bit image before the remap
        warped = np.clip(np.rint(warped), 0, 255)
    dx = _smoothed_noise(random_state.rand(height, width).astype(np.float32) * 2 - 1, sigma)
    dy = _smoothed_noise(random_state.rand(height, width).astype(np.float32) * 2 - 1, sigma)
    out = _sample(warped, x + alpha * dx, y + alpha * dy)
    if array.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(array.dtype)
    return out[..., 0] if planar else out
