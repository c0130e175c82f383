"""Synthetic STOIC 2021 tree: metadata/reference.csv and int16 .mha CT volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from medtransfer.data.sources.stoic import CSV_COLUMNS, CSV_NAME, VOLUME_DIR
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.fsutil import atomic_write_text

DEPTH = 16  # axial slices per synthetic volume


def synthetic_ct(rng: np.random.Generator, size: int, depth: int, covid: bool) -> np.ndarray:
    """A chest-CT-like volume in HU, (depth, size, size) int16, axes (z, y, x).

    Air (-1000) around an elliptic body (~40 HU), two lungs (~-800 HU), the heart towards the
    patient's left (larger x), the spine posterior (larger y, ~700 HU). ``covid`` adds
    ground-glass patches (-500..-300 HU) in the lungs of the middle slices, the class signal.
    """
    zz, yy, xx = np.mgrid[0:depth, 0:size, 0:size].astype(np.float64)
    yy, xx = yy / size, xx / size
    zrel = (zz + 0.5) / depth
    shift = rng.normal(0, 0.015, size=2)
    volume = np.full((depth, size, size), -1000.0)
    body = ((xx - 0.5 - shift[0]) / 0.45) ** 2 + ((yy - 0.5 - shift[1]) / 0.36) ** 2 < 1
    volume[body] = 40.0
    lung_extent = np.clip(1 - ((zrel - 0.5) / 0.55) ** 2, 0.05, 1)
    lungs = np.zeros(volume.shape, dtype=bool)
    for centre_x in (0.3, 0.7):
        ellipse = ((xx - centre_x - shift[0]) / 0.15) ** 2 + ((yy - 0.47 - shift[1]) / 0.25) ** 2
        lungs |= ellipse < lung_extent
    volume[lungs] = -800.0
    heart = ((xx - 0.58) / 0.12) ** 2 + ((yy - 0.45) / 0.1) ** 2 < lung_extent
    volume[heart & (zrel < 0.7)] = 45.0
    spine = ((xx - 0.5) / 0.05) ** 2 + ((yy - 0.78) / 0.05) ** 2 < 1
    volume[spine] = 700.0
    if covid:
        middle = np.abs(zz - depth // 2) <= max(1, depth // 5)
        for _ in range(int(rng.integers(3, 6))):
            cx = rng.choice([0.3, 0.7]) + rng.normal(0, 0.04)
            cy = 0.47 + rng.normal(0, 0.08)
            radius = rng.uniform(0.04, 0.08)
            patch = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            volume[patch & lungs & middle] = rng.uniform(-500, -300)
    volume += rng.normal(0, 15, size=volume.shape)
    return np.round(np.clip(volume, -1024, 3071)).astype(np.int16)


def write_volume(volume: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    """Write a (z, y, x) int16 HU array as an uncompressed .mha with CT-like geometry.

    ``spacing`` is (x, y, z) in mm; the origin puts the volume's centre near (0, 0, -150).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    depth, height, width = volume.shape
    image.SetOrigin(
        (-0.5 * width * spacing[0], -0.5 * height * spacing[1], -150 - 0.5 * depth * spacing[2])
    )
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    sitk.WriteImage(image, os.fspath(tmp), useCompression=False)
    os.replace(tmp, path)


def synth_stoic(root: Path, options: SynthOptions) -> None:
    """STOIC layout: ``metadata/reference.csv`` and int16 ``data/mha/<PatientID>.mha`` volumes.

    ``options.per_class`` volumes per class of ``16 x size x size`` voxels (z, y, x).
    """
    rng = np.random.default_rng(options.seed)
    n = 2 * options.per_class
    labels = rng.permutation([0] * options.per_class + [1] * options.per_class)
    ids = np.sort(rng.choice(np.arange(10 * n + 10), size=n, replace=False))
    field_of_view = 360.0
    spacing = (field_of_view / options.size, field_of_view / options.size, 300.0 / DEPTH)
    rows = []
    for patient, label in zip(ids, labels, strict=True):
        volume = synthetic_ct(rng, options.size, DEPTH, bool(label))
        write_volume(volume, root / VOLUME_DIR / f"{patient}.mha", spacing)
        severe = int(label == 1 and rng.random() < 0.3)
        rows.append({"PatientID": str(patient), "probCOVID": int(label), "probSevere": severe})
    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    atomic_write_text(root / CSV_NAME, frame.to_csv(index=False))
