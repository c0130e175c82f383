"""Synthetic Shenzhen and Montgomery trees in their shared Kaggle export layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.tb_cxr import MONTGOMERY, SHENZHEN, TbLayout
from medtransfer.data.synth.primitives import (
    SynthOptions,
    chest_radiograph,
    write_16bit_png,
    write_palette_png,
)
from medtransfer.fsutil import atomic_write_text


def _synth_tb(
    root: Path,
    options: SynthOptions,
    layout: TbLayout,
    writer: Callable[[np.ndarray, Path], None],
) -> None:
    """``options.per_class`` normal and TB images in shuffled order and the metadata CSV."""
    rng = np.random.default_rng(options.seed)
    rows = []
    labels = [0] * options.per_class + [1] * options.per_class
    for number, label in enumerate(rng.permutation(labels), start=1):
        name = f"{layout.file_prefix}_{number:04d}_{label}.png"
        writer(chest_radiograph(rng, options.size, bool(label)), root / layout.image_dir / name)
        sex = rng.choice(["Male", "Female"])
        age = f"{int(rng.integers(18, 80)):03d}Y"
        findings = "normal" if label == 0 else rng.choice(["PTB in the right upper field", "STB"])
        rows.append({"study_id": name, "sex": sex, "age": age, "findings": findings})
    atomic_write_text(root / layout.csv_name, pd.DataFrame(rows).to_csv(index=False))


def synth_shenzhen(root: Path, options: SynthOptions) -> None:
    """Shenzhen layout with 8-bit palette ("P") PNGs, as the real files are."""
    _synth_tb(root, options, SHENZHEN, write_palette_png)


def synth_montgomery(root: Path, options: SynthOptions) -> None:
    """Montgomery layout with 16-bit PNGs holding 12-bit values."""
    _synth_tb(root, options, MONTGOMERY, write_16bit_png)
