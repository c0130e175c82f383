"""Synthetic BACH tree: H&E-like RGB TIFFs per class and the header-less ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from medtransfer.data.sources.bach import CLASS_STRINGS, CSV_NAME, PHOTOS_DIR, PREFIXES
from medtransfer.data.synth.primitives import SynthOptions, write_image
from medtransfer.fsutil import atomic_write_text


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float) -> None:
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)


def _ring(
    rng: np.random.Generator, centre: np.ndarray, radius: float, n: int
) -> list[tuple[float, float]]:
    """``n`` nucleus centres on a jittered circle (a duct's epithelium), in pixels."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.normal(1, 0.06, n)
    return [(float(x), float(y)) for x, y in centre + np.c_[r * np.cos(angles), r * np.sin(angles)]]


def _layout(
    rng: np.random.Generator, size: int, label: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """Nucleus centres and lumen circles (x, y, r) in pixels for a class.

    Normal: two or three small ducts with one ring of nuclei and an open lumen; benign:
    more and larger ducts with two rings; in situ: ducts filled with nuclei; invasive:
    dense nuclei scattered everywhere, no ducts.
    """
    nuclei: list[tuple[float, float]] = []
    lumens: list[tuple[float, float, float]] = []
    n_ducts, duct_r, stroma = ((3, 0.1, 8), (5, 0.13, 15), (3, 0.15, 20), (0, 0.0, 140))[label]
    for _ in range(n_ducts):
        centre = rng.uniform(0.15, 0.85, 2) * size
        radius = duct_r * size * rng.uniform(0.8, 1.2)
        if label == 2:
            count = int(35 * (radius / size / 0.1) ** 2)
            offsets = rng.normal(0, radius / 2.2, (count, 2))
            nuclei.extend(map(tuple, centre + offsets))
            nuclei.extend(_ring(rng, centre, radius, int(2 * np.pi * radius / (0.03 * size))))
            continue
        lumens.append((float(centre[0]), float(centre[1]), 0.7 * radius))
        nuclei.extend(_ring(rng, centre, radius, int(2 * np.pi * radius / (0.03 * size))))
        if label == 1:
            nuclei.extend(
                _ring(rng, centre, 1.25 * radius, int(2 * np.pi * radius / (0.035 * size)))
            )
    nuclei.extend(map(tuple, rng.uniform(0, size, (stroma, 2))))
    return nuclei, lumens


def histology_patch(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """An H&E-like picture whose BACH class is learnable, (size, size, 3) float in [0, 1].

    Pink eosin stroma with fibre texture, white lumens and purple haematoxylin nuclei laid
    out per class (see :func:`_layout`).
    """
    nuclei, lumens = _layout(rng, size, label)
    nucleus_mask = Image.new("L", (size, size), 0)
    lumen_mask = Image.new("L", (size, size), 0)
    draw_n, draw_l = ImageDraw.Draw(nucleus_mask), ImageDraw.Draw(lumen_mask)
    radius = max(0.9, 0.012 * size)
    for x, y in nuclei:
        _disc(draw_n, x, y, radius * rng.uniform(0.8, 1.3))
    for x, y, r in lumens:
        _disc(draw_l, x, y, r)
    blur = ImageFilter.GaussianBlur(radius=max(0.4, 0.003 * size))
    nuc = np.asarray(nucleus_mask.filter(blur), dtype=np.float64)[..., None] / 255
    lum = np.asarray(lumen_mask.filter(blur), dtype=np.float64)[..., None] / 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    fibres = 0.5 + 0.5 * np.sin(2 * np.pi * (11 * xx + 4 * yy + rng.uniform(0, 1)))
    stroma = np.array([0.92, 0.66, 0.8]) - 0.08 * fibres[..., None] * np.array([0.2, 1.0, 0.5])
    image = stroma * (1 - lum) + np.array([0.96, 0.93, 0.95]) * lum
    image = image * (1 - nuc) + np.array([0.33, 0.18, 0.52]) * nuc
    image = image + rng.normal(0, 0.03, size=image.shape)
    return np.clip(image, 0, 1)


def synth_bach(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` 8-bit RGB TIFFs per class and the header-less ground-truth CSV.

    Files are named as in the release (``n001.tif``, ``b001.tif``, ``is001.tif``,
    ``iv001.tif``) and listed in sorted file-name order.
    """
    rng = np.random.default_rng(options.seed)
    photos = root / PHOTOS_DIR
    rows = []
    for label, prefix in enumerate(PREFIXES):
        for number in range(1, options.per_class + 1):
            name = f"{prefix}{number:03d}.tif"
            image = histology_patch(rng, options.size, label)
            write_image(image, photos / CLASS_STRINGS[label] / name)
            rows.append((name, CLASS_STRINGS[label]))
    rows.sort()
    frame = pd.DataFrame(rows)
    atomic_write_text(photos / CSV_NAME, frame.to_csv(index=False, header=False))
