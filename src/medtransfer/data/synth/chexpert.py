"""Synthetic CheXpert tree: train.csv with the official header and 8-bit grayscale JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.chexpert import (
    CHEXPERT_COLUMNS,
    CSV_NAME,
    LABEL_COLUMNS,
    TARGET_COLUMN,
)
from medtransfer.data.synth.primitives import SynthOptions, chest_radiograph, write_image
from medtransfer.fsutil import atomic_write_text


def _plan_studies(rng: np.random.Generator, per_class: int) -> list[tuple[str, int]]:
    """(Pleural Effusion value, number of views) per study, ``per_class`` images per class.

    Class 1 mixes ``1.0`` with uncertain ``-1.0`` (U-Ones counts both as positive); class 0
    mixes ``0.0`` with blanks. The first two studies of each class are single-view, one of
    each value, so both values occur whenever ``per_class >= 2``.
    """
    studies: list[tuple[str, int]] = []
    for values in (("0.0", ""), ("1.0", "-1.0")):
        remaining, number = per_class, 0
        while remaining > 0:
            views = 1 if number < 2 or remaining == 1 else int(rng.random() < 0.4) + 1
            value = values[number] if number < 2 else values[int(rng.random() < 0.35)]
            studies.append((value, views))
            remaining -= views
            number += 1
    return studies


def _other_labels(rng: np.random.Generator, effusion: str) -> dict[str, str]:
    """Plausible values for the label columns other than Pleural Effusion, one study."""
    values = {
        column: str(rng.choice(["", "1.0", "0.0", "-1.0"], p=[0.72, 0.12, 0.11, 0.05]))
        for column in LABEL_COLUMNS
        if column not in ("No Finding", TARGET_COLUMN)
    }
    values[TARGET_COLUMN] = effusion
    positive = any(v in ("1.0", "-1.0") for v in values.values())
    values["No Finding"] = "" if positive else "1.0"
    return values


def synth_chexpert(root: Path, options: SynthOptions) -> None:
    """CheXpert layout: train.csv with the official header, 8-bit grayscale JPEGs.

    Patients hold 1-3 studies each; a study is a frontal view, sometimes with a lateral one
    sharing its labels. Pleural Effusion is planted with ``chest_radiograph(abnormal=...)``
    for ``1.0`` and ``-1.0``.
    """
    rng = np.random.default_rng(options.seed)
    studies = _plan_studies(rng, options.per_class)
    order = rng.permutation(len(studies))
    rows: list[dict[str, object]] = []
    patient, left = 0, 0
    for position in order:
        if left == 0:
            patient, left, study = patient + 1, int(rng.integers(1, 4)), 0
            sex, age = str(rng.choice(["Male", "Female"])), int(rng.integers(18, 91))
        study, left = study + 1, left - 1
        effusion, views = studies[position]
        labels = _other_labels(rng, effusion)
        folder = f"CheXpert-v1.0/train/patient{patient:05d}/study{study}"
        for view in range(views):
            name = "view1_frontal.jpg" if view == 0 else "view2_lateral.jpg"
            image = chest_radiograph(rng, options.size, effusion in ("1.0", "-1.0"))
            write_image(image, root / folder / name)
            rows.append(
                {
                    "Path": f"{folder}/{name}",
                    "Sex": sex,
                    "Age": age,
                    "Frontal/Lateral": "Frontal" if view == 0 else "Lateral",
                    "AP/PA": str(rng.choice(["AP", "PA"])) if view == 0 else "",
                    **labels,
                }
            )
    frame = pd.DataFrame(rows, columns=list(CHEXPERT_COLUMNS))
    atomic_write_text(root / CSV_NAME, frame.to_csv(index=False))
