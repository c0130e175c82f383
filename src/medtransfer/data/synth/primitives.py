"""Options and the drawing and writing primitives every synthetic writer shares.

Pictures are float arrays in [0, 1], (size, size) for grayscale or (size, size, 3) for
RGB; the ``write_*`` functions turn them into files in the formats the real releases use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SynthOptions:
    """How big a synthetic tree to write: images per class, image side in pixels, seed."""

    per_class: int = 40
    size: int = 128
    seed: int = 0


def chest_radiograph(rng: np.random.Generator, size: int, abnormal: bool) -> np.ndarray:
    """A frontal-chest-like picture, (size, size) float64 in [0, 1].

    Two dark lung fields on a brighter body; ``abnormal`` adds bright patchy opacities in
    the upper lung zones (the planted class signal).
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    shift = rng.normal(0, 0.02, size=2)
    body = 0.55 + 0.1 * np.cos(np.pi * (xx - 0.5))
    image = body.copy()
    for centre_x in (0.32, 0.68):
        cx, cy = centre_x + shift[0], 0.5 + shift[1]
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - cy) / 0.3) ** 2 < 1
        image[lung] -= 0.3
    if abnormal:
        for _ in range(rng.integers(3, 6)):
            cx = rng.choice([0.32, 0.68]) + rng.normal(0, 0.05)
            cy = 0.35 + rng.normal(0, 0.06)
            radius = rng.uniform(0.03, 0.07)
            image += 0.35 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)))
    image += rng.normal(0, 0.04, size=image.shape)
    return np.clip(image, 0, 1)


def class_pattern(
    rng: np.random.Generator, size: int, label: int, n_classes: int, channels: int = 3
) -> np.ndarray:
    """A textured picture whose class is learnable, (size, size, channels) float in [0, 1].

    Class ``label`` sets the orientation and frequency of a stripe pattern plus a colour
    tint; noise and a random phase vary the images within a class.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * label / max(n_classes, 1)
    frequency = 3 + 2 * label
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.25 * np.sin(
        2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + phase
    )
    tint = 0.6 + 0.4 * np.cos(2 * np.pi * (np.arange(channels) / channels + label / n_classes))
    image = stripes[..., None] * tint[None, None, :]
    image = image + rng.normal(0, 0.05, size=image.shape)
    return np.clip(image, 0, 1)


def to_uint8_image(image: np.ndarray) -> Image.Image:
    """float [0, 1] array (H, W) or (H, W, 3) -> 8-bit PIL image (L or RGB)."""
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def write_palette_png(image: np.ndarray, path: Path) -> None:
    """8-bit palette ("P") PNG of a (H, W) float image, as the real Shenzhen files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = to_uint8_image(image)
    gray.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path)


def write_16bit_png(image: np.ndarray, path: Path) -> None:
    """16-bit grayscale PNG holding 12-bit values (a decoder that clips at 255 shows white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(200 + image * 3800).astype(np.uint16)).save(path)


def write_image(image: np.ndarray, path: Path, **save_options: object) -> None:
    """Save a float [0, 1] (H, W) or (H, W, 3) image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_uint8_image(image).save(path, **save_options)
