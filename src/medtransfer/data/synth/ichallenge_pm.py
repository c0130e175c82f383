"""Synthetic iChallenge-PM (PALM) tree: N, H and P fundus JPEGs in the doubled folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtransfer.data.sources.ichallenge_pm import PM_IMAGES, PM_PREFIXES
from medtransfer.data.synth.fundus import (
    Fundus,
    draw_fundus,
    finish_fundus,
    paint,
    random_point,
)
from medtransfer.data.synth.primitives import SynthOptions, write_image


def _tessellate(fundus: Fundus, rng: np.random.Generator, strength: float) -> None:
    """Show the choroidal vessels as a dark stripe pattern (in place), as in high myopia."""
    angle = rng.uniform(0, np.pi)
    u = fundus.xx * np.cos(angle) + fundus.yy * np.sin(angle)
    v = -fundus.xx * np.sin(angle) + fundus.yy * np.cos(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (9 * u + 0.6 * np.sin(2 * np.pi * 3 * v)))
    fundus.image[:] *= 1 - strength * stripes[..., None]


def pm_fundus(rng: np.random.Generator, size: int, prefix: str) -> np.ndarray:
    """A fundus for a PALM prefix (``N``, ``H``, ``P``), (size, size, 3) float in [0, 1].

    ``H`` (high myopia): a paler, tessellated fundus with a small peripapillary crescent;
    ``P`` (pathological myopia): stronger tessellation, a large pale atrophy around the
    disc and white patches of atrophy near the macula; ``N``: a plain fundus.
    """
    fundus = draw_fundus(rng, size, right_eye=bool(rng.integers(2)))
    if prefix in ("H", "P"):
        fundus.image[:] = 0.8 * fundus.image + 0.2 * np.array([0.95, 0.6, 0.4])
        _tessellate(fundus, rng, 0.15 if prefix == "H" else 0.25)
        radius = 0.05 if prefix == "H" else 0.1
        paint(fundus, fundus.optic, radius, (0.95, 0.85, 0.72), 0.8)
    if prefix == "P":
        for _ in range(int(rng.integers(2, 5))):
            centre = random_point(rng, 0.1, fundus.macula)
            paint(
                fundus,
                centre,
                rng.uniform(0.025, 0.045),
                (0.97, 0.93, 0.85),
            )
    return finish_fundus(fundus, rng)


def synth_ichallenge_pm(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` RGB JPEGs for each PALM prefix N, H and P, in the doubled folder.

    No CSV (the official release has none): under the default rule the negative class
    gets the N and H images (2 x ``per_class``), the positive class the P images.
    """
    rng = np.random.default_rng(options.seed)
    for prefix in PM_PREFIXES:
        for number in range(1, options.per_class + 1):
            image = pm_fundus(rng, options.size, prefix)
            write_image(image, root / PM_IMAGES / f"{prefix}{number:04d}.jpg", quality=92)
