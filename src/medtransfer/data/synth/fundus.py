"""Colour-fundus drawing shared by the EyePACS, iChallenge-AMD and iChallenge-PM writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class Fundus:
    """A drawn fundus photograph and where its landmarks are.

    ``image``: (size, size, 3) float in [0, 1] (black outside the retina); ``mask``:
    (size, size) bool, the retinal disc; ``optic`` and ``macula``: (x, y) centres in
    units of the image side; ``xx``, ``yy``: (size, size) pixel-centre coordinates in the
    same units.
    """

    image: np.ndarray
    mask: np.ndarray
    optic: tuple[float, float]
    macula: tuple[float, float]
    xx: np.ndarray
    yy: np.ndarray


def _blob(fundus: Fundus, centre: tuple[float, float], radius: float) -> np.ndarray:
    """A Gaussian bump of the given radius at ``centre``, (size, size) float in [0, 1]."""
    d2 = (fundus.xx - centre[0]) ** 2 + (fundus.yy - centre[1]) ** 2
    return np.exp(-d2 / (2 * radius**2))


def paint(
    fundus: Fundus,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[float, float, float],
    strength: float = 1.0,
) -> None:
    """Blend ``colour`` into the image (in place) with a Gaussian weight at ``centre``.

    The radius is at least one pixel, so spots stay visible on small images.
    """
    size = fundus.image.shape[0]
    weight = strength * _blob(fundus, centre, max(radius, 0.8 / size))[..., None]
    weight = np.clip(weight, 0, 1)
    fundus.image[:] = fundus.image * (1 - weight) + np.asarray(colour)[None, None, :] * weight


def _vessels(fundus: Fundus, rng: np.random.Generator, shade: float) -> None:
    """Four darker vessel arcades leaving the optic disc (in place)."""
    ox, oy = fundus.optic
    direction = 1.0 if fundus.macula[0] > ox else -1.0
    size = fundus.image.shape[0]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for sign in (-1.0, 1.0):
        for spread, width in ((0.18, 0.012), (0.32, 0.008)):
            t = np.linspace(0, 1, 16)
            xs = ox + direction * 0.45 * t
            ys = oy + sign * spread * np.sin(np.pi * 0.8 * t) + rng.normal(0, 0.008, t.shape)
            points = [(float(x * size), float(y * size)) for x, y in zip(xs, ys, strict=True)]
            draw.line(points, fill=255, width=max(1, round(width * size)), joint="curve")
    blurred = canvas.filter(ImageFilter.GaussianBlur(radius=max(0.5, 0.004 * size)))
    darkness = np.asarray(blurred, dtype=np.float64) / 255.0
    fundus.image[:] *= 1 - shade * darkness[..., None]


def draw_fundus(rng: np.random.Generator, size: int, right_eye: bool) -> Fundus:
    """A colour-fundus-like picture: orange retina on black, optic disc, macula, vessels.

    The optic disc sits on the nasal side (right of the image for a right eye) and the
    macula on the other side of the centre. Returns a :class:`Fundus` whose ``image`` is
    (size, size, 3) float in [0, 1]; callers paint their class signal on it.
    """
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx, cy = 0.5 + rng.normal(0, 0.01, size=2)
    r = np.hypot(xx - cx, yy - cy)
    mask = r < 0.47
    falloff = 1 - 0.55 * (r / 0.47) ** 2
    base = np.array([0.82, 0.36, 0.14]) * rng.uniform(0.9, 1.1)
    image = np.clip(falloff[..., None] * base[None, None, :], 0, 1)
    side = 1.0 if right_eye else -1.0
    optic = (cx + side * 0.2 + rng.normal(0, 0.01), cy + rng.normal(0, 0.01))
    macula = (cx - side * 0.06 + rng.normal(0, 0.01), cy + rng.normal(0, 0.01))
    fundus = Fundus(image, mask, optic, macula, xx, yy)
    paint(fundus, macula, 0.07, (0.45, 0.16, 0.06), 0.6)
    _vessels(fundus, rng, shade=0.35)
    paint(fundus, optic, 0.05, (1.0, 0.86, 0.6), 1.0)
    return fundus


def finish_fundus(fundus: Fundus, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise and blacken everything outside the retina; (size, size, 3) float."""
    image = fundus.image + rng.normal(0, 0.02, size=fundus.image.shape)
    image[~fundus.mask] = 0.0
    return np.clip(image, 0, 1)


def random_point(
    rng: np.random.Generator, spread: float, centre: tuple[float, float] = (0.5, 0.5)
) -> tuple[float, float]:
    """A uniform random point within ``spread`` of ``centre`` (image-side units)."""
    angle = rng.uniform(0, 2 * np.pi)
    radius = spread * np.sqrt(rng.uniform(0, 1))
    return (centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle))
