"""Pictures of the analyses: saliency heatmaps and overlays, invariance curves.

Everything is drawn without pyplot's global figure state (colour maps applied to arrays,
and ``matplotlib.figure.Figure`` objects for plots), so no figure can pile up on another
from one image to the next (the original's overlays stacked, docs/original-study.md#defect-e26).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

#: The original's overlay opacity of the map over the image.
OVERLAY_ALPHA = 0.6


def jet(values: np.ndarray) -> np.ndarray:
    """``values`` (H, W) min-max scaled to the ``jet`` colour map, as ``plt.imsave(values,
    cmap="jet")`` does: (H, W, 3) uint8. A constant map is the colour map's lowest colour."""
    from matplotlib import colormaps

    array = np.asarray(values, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return colormaps["jet"](scaled, bytes=True)[..., :3]


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The ``jet`` map of ``values`` (H, W) over ``image`` (H, W, 3) float in [0, 1] with
    opacity ``alpha``, pixel for pixel: (H, W, 3) uint8."""
    if image.shape[:2] != values.shape:
        raise ValueError(f"image {image.shape[:2]} and map {values.shape} differ in size")
    blended = (1 - alpha) * np.asarray(image, dtype=np.float64) * 255 + alpha * jet(values)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_png(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (H, W, 3) uint8 as a PNG file."""
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB").save(path, format="PNG")
    return path


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
