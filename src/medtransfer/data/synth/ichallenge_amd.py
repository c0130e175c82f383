"""Synthetic iChallenge-AMD tree: AMD / non-AMD fundus JPEGs and the optional label CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.ichallenge_amd import AMD_CSV, amd_path
from medtransfer.data.synth.fundus import draw_fundus, finish_fundus, paint, random_point
from medtransfer.data.synth.primitives import SynthOptions, write_image
from medtransfer.fsutil import atomic_write_text


def amd_fundus(rng: np.random.Generator, size: int, amd: bool) -> np.ndarray:
    """A fundus with (``amd``) or without drusen at the macula, (size, size, 3) float in [0, 1].

    AMD: a cluster of yellow drusen and some mottled pigment around the macula; non-AMD
    images get at most one small druse.
    """
    fundus = draw_fundus(rng, size, right_eye=bool(rng.integers(2)))
    count = int(rng.integers(9, 15)) if amd else int(rng.integers(0, 2))
    for _ in range(count):
        centre = random_point(rng, 0.12 if amd else 0.2, fundus.macula)
        radius = rng.uniform(0.012, 0.028) if amd else 0.01
        paint(fundus, centre, radius, (0.98, 0.86, 0.42), 0.9)
    if amd:
        for _ in range(int(rng.integers(2, 5))):
            centre = random_point(rng, 0.08, fundus.macula)
            paint(fundus, centre, 0.015, (0.25, 0.1, 0.04), 0.7)
    return finish_fundus(fundus, rng)


def synth_ichallenge_amd(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` AMD (``A0001.jpg``, ...) and non-AMD (``N0001.jpg``) RGB JPEGs.

    Also writes the optional ``amd_labels.csv`` (header ``imgName,label``; rows in sorted
    file-name order, the order the reader uses without it).
    """
    rng = np.random.default_rng(options.seed)
    rows = []
    for label, prefix in ((1, "A"), (0, "N")):
        for number in range(1, options.per_class + 1):
            stem = f"{prefix}{number:04d}"
            image = amd_fundus(rng, options.size, amd=bool(label))
            write_image(image, root / amd_path(f"{stem}.jpg", label), quality=92)
            rows.append({"imgName": stem, "label": label})
    atomic_write_text(root / AMD_CSV, pd.DataFrame(rows).to_csv(index=False))
