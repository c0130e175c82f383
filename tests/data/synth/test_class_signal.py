"""The planted class signal of the image writers: each class is visibly different.

Labels come from the layout each writer produced (class folder, label CSV, file-name
prefix), so these tests read no manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.images import load_image
from medtransfer.data.sources.bach import CLASS_STRINGS, PHOTOS_DIR
from medtransfer.data.sources.eyepacs import IMAGE_SUFFIX, SPLIT_FILES
from medtransfer.data.sources.ichallenge_amd import AMD_DIR, AMD_FOLDERS
from medtransfer.data.sources.ichallenge_pm import PM_IMAGES
from medtransfer.data.synth.bach import synth_bach
from medtransfer.data.synth.eyepacs import synth_diabetic_retinopathy
from medtransfer.data.synth.ichallenge_amd import synth_ichallenge_amd
from medtransfer.data.synth.ichallenge_pm import synth_ichallenge_pm
from medtransfer.data.synth.primitives import SynthOptions


def _class_means(share: list[float], labels: list[int]) -> pd.Series:
    """Mean of a per-image pixel share per label."""
    return pd.Series(share).groupby(pd.Series(labels)).mean()


def _pale_share(path: Path) -> float:
    """Share of yellow/white pixels (drusen, atrophy) in one fundus image."""
    rgb = np.asarray(load_image(path), dtype=float)
    return float(((rgb[..., 1] > 150) & (rgb[..., 2] > 70)).mean())


def test_bach_nuclei_are_densest_in_carcinoma(tmp_path: Path) -> None:
    synth_bach(tmp_path, SynthOptions(per_class=4, size=24, seed=3))
    paths = sorted((tmp_path / PHOTOS_DIR).glob("*/*.tif"))
    labels = [CLASS_STRINGS.index(path.parent.name) for path in paths]
    # purple (nucleus) pixel share per image: invasive is densest, normal sparsest
    share = [(np.asarray(load_image(p), dtype=float)[..., 1] < 110).mean() for p in paths]
    means = _class_means(share, labels)
    assert means[3] > means[0] and means[2] > means[0]


def test_dr_lesions_grow_with_the_level(tmp_path: Path) -> None:
    synth_diabetic_retinopathy(tmp_path, SynthOptions(per_class=4, size=24, seed=2))
    share, labels = [], []
    for split, csv_name in SPLIT_FILES.items():
        for name, level in pd.read_csv(tmp_path / csv_name).iloc[:, :2].itertuples(index=False):
            rgb = np.asarray(load_image(tmp_path / split / f"{name}{IMAGE_SUFFIX}"), dtype=float)
            # share of lesion-coloured pixels (dark red dots, yellow exudates)
            dark_red = (rgb[..., 0] > 50) & (rgb[..., 0] < 150) & (rgb[..., 1] < 40)
            yellow = (rgb[..., 1] > 170) & (rgb[..., 2] > 60)
            share.append((dark_red | yellow).mean())
            labels.append(int(level))
    means = _class_means(share, labels)
    assert means[4] > means[2] > means[0]


def test_amd_drusen_mark_the_amd_class(tmp_path: Path) -> None:
    synth_ichallenge_amd(tmp_path, SynthOptions(per_class=4, size=20, seed=1))
    share, labels = [], []
    for label, folder in AMD_FOLDERS.items():
        for path in sorted((tmp_path / AMD_DIR / folder).glob("*.jpg")):
            share.append(_pale_share(path))
            labels.append(label)
    means = _class_means(share, labels)
    assert means[1] > 2 * means[0]


def test_pm_atrophy_marks_pathological_myopia(tmp_path: Path) -> None:
    synth_ichallenge_pm(tmp_path, SynthOptions(per_class=4, size=20, seed=1))
    paths = sorted((tmp_path / PM_IMAGES).glob("*.jpg"))
    labels = [int(path.name.startswith("P")) for path in paths]  # the default rule: P positive
    means = _class_means([_pale_share(path) for path in paths], labels)
    assert means[1] > 2 * means[0]
