"""Synthetic EyePACS / Kaggle DR tree: both label CSVs and RGB JPEGs per DR level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.eyepacs import IMAGE_SUFFIX, SPLIT_FILES
from medtransfer.data.synth.fundus import draw_fundus, finish_fundus, paint, random_point
from medtransfer.data.synth.primitives import SynthOptions, write_image
from medtransfer.fsutil import atomic_write_text


def dr_fundus(rng: np.random.Generator, size: int, level: int, right_eye: bool) -> np.ndarray:
    """A fundus whose DR ``level`` (0..4) is learnable, (size, size, 3) float in [0, 1].

    Dark red dots (microaneurysms, haemorrhages) grow in number with the level, yellow
    exudates appear from level 2, and level 4 adds a tuft of new vessels at the disc.
    """
    fundus = draw_fundus(rng, size, right_eye)
    for _ in range((0, 4, 9, 16, 20)[level]):
        paint(fundus, random_point(rng, 0.36), rng.uniform(0.012, 0.025), (0.35, 0.02, 0.02))
    for _ in range((0, 0, 3, 6, 8)[level]):
        paint(fundus, random_point(rng, 0.3), rng.uniform(0.01, 0.02), (1.0, 0.92, 0.45))
    if level == 4:
        ox, oy = fundus.optic
        for _ in range(10):
            centre = (ox + rng.normal(0, 0.04), oy + rng.normal(0, 0.04))
            paint(fundus, centre, 0.008, (0.55, 0.0, 0.05), 0.9)
    return finish_fundus(fundus, rng)


def _synth_labels(rng: np.random.Generator, per_class: int) -> dict[str, np.ndarray]:
    """Shuffled levels per split, (n_train,) and (n_test,) int.

    About two thirds of each class go to train, the rest (at least one image per class
    when ``per_class >= 2``) to test.
    """
    n_test = max(1, per_class // 3) if per_class >= 2 else 0
    train = np.repeat(np.arange(5), per_class - n_test)
    test = np.repeat(np.arange(5), n_test)
    return {"train": rng.permutation(train), "test": rng.permutation(test)}


def synth_diabetic_retinopathy(root: Path, options: SynthOptions) -> None:
    """Write both splits: ``options.per_class`` RGB JPEGs per level in all, two eyes a patient.

    Train and test patients get disjoint numbers; rows are sorted by patient number, left
    eye before right, as in Kaggle's files; ``testLabels.csv`` has the ``Usage`` column. With
    an odd number of images in a split its last patient has a left eye only.
    """
    rng = np.random.default_rng(options.seed)
    levels = _synth_labels(rng, options.per_class)
    n_patients = {split: (len(v) + 1) // 2 for split, v in levels.items()}
    numbers = rng.permutation(np.arange(1, 3 * sum(n_patients.values()) + 2))
    patients = {
        "train": np.sort(numbers[: n_patients["train"]]),
        "test": np.sort(numbers[n_patients["train"] : sum(n_patients.values())]),
    }
    for split, split_levels in levels.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i, level in enumerate(split_levels):
            eye = "left" if i % 2 == 0 else "right"
            name = f"{patients[split][i // 2]}_{eye}"
            image = dr_fundus(rng, options.size, int(level), right_eye=eye == "right")
            write_image(image, root / split / f"{name}{IMAGE_SUFFIX}", quality=92)
            row = {"image": name, "level": int(level)}
            if split == "test":
                row["Usage"] = "Public" if rng.uniform() < 0.2 else "Private"
            rows.append(row)
        columns = ["image", "level"] + (["Usage"] if split == "test" else [])
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write_text(root / SPLIT_FILES[split], frame.to_csv(index=False))
