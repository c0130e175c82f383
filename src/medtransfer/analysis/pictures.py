"""Pictures an analysis leaves beside its record: 8-bit RGB arrays to files, side by side.

Arrays are ``(H, W, 3)`` uint8. Formats: ``PNG`` (lossless, the default everywhere),
``JPEG`` (Pillow's default quality 75, what the original study's ``Image.save`` wrote for a
``.jpg`` name) and ``TIFF``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Pillow format -> file suffix.
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}


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
