"""Pictures an analysis leaves beside its record: 8-bit RGB arrays to files, side by side,
saliency heatmaps and overlays, invariance curves.

Arrays are ``(H, W, 3)`` uint8. Formats: ``PNG`` (lossless, the default everywhere),
``JPEG`` (Pillow's default quality 75, what the original study's ``Image.save`` wrote for a
``.jpg`` name) and ``TIFF``. Everything is drawn without pyplot's global figure state
(colour maps applied to arrays, ``matplotlib.figure.Figure`` objects for plots), so no
figure can pile up on another from one image to the next (the original's saliency overlays
stacked, docs/original-study.md#defect-e26).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Pillow format -> file suffix.
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
#: The original's overlay opacity of a saliency map over its image.
OVERLAY_ALPHA = 0.6


def format_of(source: str) -> str:
    """The format the original study saved a reconstruction of ``source`` in: its file's
    own format for JPEG, PNG and TIFF names, JPEG otherwise (it saved STOIC's ``.mha``
    slice as ``.jpeg``)."""
    suffix = Path(source.split("#", 1)[0]).suffix.lower()
    if suffix in {".png"}:
        return "PNG"
    if suffix in {".tif", ".tiff"}:
        return "TIFF"
    return "JPEG"


def save_rgb(array: np.ndarray, path: Path, image_format: str = "PNG") -> Path:
    """Write ``array`` ``(H, W, 3)`` uint8 to ``path`` (written under a temporary name, then
    renamed)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {array.shape} {array.dtype}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array, "RGB").save(tmp, format=image_format)
    os.replace(tmp, path)
    return path


def side_by_side(
    arrays: Sequence[np.ndarray], captions: Sequence[str] = (), gap: int = 8
) -> np.ndarray:
    """The ``(H, W, 3)`` arrays in a row on white, ``gap`` pixels apart, each with its
    caption underneath when given (and the images are at least 64 pixels tall)."""
    height = max(a.shape[0] for a in arrays)
    width = sum(a.shape[1] for a in arrays) + gap * (len(arrays) + 1)
    band = 16 if captions and height >= 64 else 0
    canvas = Image.new("RGB", (width, height + 2 * gap + band), "white")
    draw = ImageDraw.Draw(canvas)
    left = gap
    for index, array in enumerate(arrays):
        canvas.paste(Image.fromarray(array, "RGB"), (left, gap))
        if band and index < len(captions):
            draw.text((left, gap + height + 2), captions[index], fill="black")
        left += array.shape[1] + gap
    return np.asarray(canvas)


def jet(values: np.ndarray) -> np.ndarray:
    """``values`` (H, W) min-max scaled to the ``jet`` colour map, as ``plt.imsave(values,
    cmap="jet")`` does: (H, W, 3) uint8. A constant map is the colour map's lowest colour."""
    from matplotlib import colormaps

    array = np.asarray(values, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.ascontiguousarray(colormaps["jet"](scaled, bytes=True)[..., :3])


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The ``jet`` map of ``values`` (H, W) over ``image`` (H, W, 3) float in [0, 1] with
    opacity ``alpha``, pixel for pixel: (H, W, 3) uint8."""
    if image.shape[:2] != values.shape:
        raise ValueError(f"image {image.shape[:2]} and map {values.shape} differ in size")
    blended = (1 - alpha) * np.asarray(image, dtype=np.float64) * 255 + alpha * jet(values)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_curve(
    path: Path,
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    title: str,
    marked: int | None = None,
) -> Path:
    """Plot each of ``curves`` (name -> values, one per ``x``) in its own panel and write a
    PNG; ``marked``: an index of ``x`` drawn as an open circle (the identity view)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.6 * len(curves)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(curves), 1, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, curves.items(), strict=True):
        ax.plot(x, values, marker="." if len(x) <= 64 else None, linewidth=1)
        if marked is not None:
            ax.plot([x[marked]], [values[marked]], "o", mfc="none", color="black", label="identity")
            ax.legend(loc="best", fontsize="small")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    axes[0].set_title(title)
    figure.savefig(path, format="png", dpi=100)
    return path
