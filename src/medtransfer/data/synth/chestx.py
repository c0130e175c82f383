"""Synthetic ChestX-ray14 tree: Data_Entry_2017.csv and 8-bit grayscale PNGs in images/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medtransfer.data.sources.chestx import (
    CLASS_FINDINGS,
    CLASS_INDEX,
    CSV_NAME,
    HEADER_LINE,
    IMAGE_DIR,
    NO_FINDING,
)
from medtransfer.data.synth.primitives import SynthOptions, chest_radiograph, to_uint8_image
from medtransfer.fsutil import atomic_write_text

#: Where each class's planted spot sits, (x, y) as fractions of the side.
_CLASS_SPOTS = (
    (0.32, 0.3),
    (0.5, 0.68),
    (0.68, 0.8),
    (0.32, 0.55),
    (0.68, 0.3),
    (0.68, 0.55),
    (0.32, 0.8),
)
#: Rows the original's filter drops, cycled through by the synthetic writer.
_DROPPED_FINDINGS = (
    NO_FINDING,
    "Effusion|Infiltration",
    "Pneumonia",
    "Hernia",
    NO_FINDING,
    "Atelectasis|Mass|Nodule",
    "Consolidation",
    "Cardiomegaly|Edema",
)


def finding_radiograph(rng: np.random.Generator, size: int, findings: Sequence[str]) -> np.ndarray:
    """A chest picture with one bright spot per finding, (size, size) float64 in [0, 1].

    Each of the 7 classes has its own spot position (the planted class signal); the other
    findings get a spot at a random place; ``No Finding`` gets none.
    """
    image = chest_radiograph(rng, size, abnormal=False)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for finding in findings:
        if finding == NO_FINDING:
            continue
        if finding in CLASS_INDEX:
            cx, cy = np.asarray(_CLASS_SPOTS[CLASS_INDEX[finding]]) + rng.normal(0, 0.02, 2)
        else:
            cx, cy = rng.uniform(0.25, 0.75, 2)
        image = image + 0.45 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.06**2))
    return np.clip(image, 0, 1)


def _entry_line(
    rng: np.random.Generator,
    name: str,
    findings: str,
    followup: int,
    patient: int,
    age: int,
    sex: str,
) -> str:
    """One Data_Entry_2017.csv row, with the real file's trailing comma."""
    width, height = (int(v) for v in rng.choice([2048, 2500, 2992, 3056], size=2))
    spacing = str(rng.choice(["0.143", "0.168", "0.139"]))
    view = str(rng.choice(["PA", "AP"]))
    return (
        f"{name},{findings},{followup},{patient},{age},{sex},{view},{width},{height},"
        f"{spacing},{spacing},"
    )


def synth_chestx(root: Path, options: SynthOptions) -> None:
    """ChestX-ray14 layout: Data_Entry_2017.csv and 8-bit grayscale PNGs in ``images/``.

    ``per_class`` single-finding rows per class, plus rows the filter drops (No Finding,
    Pneumonia, other findings, multi-label); patients have 1-4 follow-ups. The first image
    is RGBA (opaque), as a few NIH files are.
    """
    rng = np.random.default_rng(options.seed)
    n_dropped = max(4, options.per_class)
    findings = [f for f in CLASS_FINDINGS for _ in range(options.per_class)]
    findings += [_DROPPED_FINDINGS[i % len(_DROPPED_FINDINGS)] for i in range(n_dropped)]
    lines = [HEADER_LINE]
    patient, left, followup = 0, 0, 0
    for number, position in enumerate(rng.permutation(len(findings))):
        if left == 0:
            patient, left, followup = patient + 1, int(rng.integers(1, 5)), 0
            age, sex = int(rng.integers(1, 95)), str(rng.choice(["M", "F"]))
        name = f"{patient:08d}_{followup:03d}.png"
        picture = to_uint8_image(
            finding_radiograph(rng, options.size, findings[position].split("|"))
        )
        path = root / IMAGE_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (picture.convert("RGBA") if number == 0 else picture).save(path)
        lines.append(_entry_line(rng, name, findings[position], followup, patient, age, sex))
        followup, left = followup + 1, left - 1
    atomic_write_text(root / CSV_NAME, "\n".join(lines) + "\n")
