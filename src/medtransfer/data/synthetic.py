"""Small image trees in the exact published layouts, with a learnable class signal.

Used by the tests, the demo and the benchmarks, and by users who want to see the layout a
loader expects (``medtransfer datasets synth --dataset NAME --out DIR``). Every tree is
written under ``DIR/<dataset folder>/`` so that ``--data-root DIR`` reads it directly.
The pixels are synthetic: the class signal is planted on purpose and means nothing
clinically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.data.catalog import get_dataset_spec
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_text


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


def _tb_tree(
    root: Path,
    options: SynthOptions,
    *,
    csv_name: str,
    image_dir: str,
    prefix: str,
    writer: Callable[[np.ndarray, Path], None],
) -> None:
    rng = np.random.default_rng(options.seed)
    rows = []
    labels = [0] * options.per_class + [1] * options.per_class
    for number, label in enumerate(rng.permutation(labels), start=1):
        name = f"{prefix}_{number:04d}_{label}.png"
        writer(chest_radiograph(rng, options.size, bool(label)), root / image_dir / name)
        sex = rng.choice(["Male", "Female"])
        age = f"{int(rng.integers(18, 80)):03d}Y"
        findings = "normal" if label == 0 else rng.choice(["PTB in the right upper field", "STB"])
        rows.append({"study_id": name, "sex": sex, "age": age, "findings": findings})
    atomic_write_text(root / csv_name, pd.DataFrame(rows).to_csv(index=False))


def _write_palette_png(image: np.ndarray, path: Path) -> None:
    """8-bit palette ("P") PNG, as the real Shenzhen files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
    gray.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path)


def _write_16bit_png(image: np.ndarray, path: Path) -> None:
    """16-bit grayscale PNG holding 12-bit values (a decoder that clips at 255 shows white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(200 + image * 3800).astype(np.uint16)).save(path)


def synth_shenzhen(root: Path, options: SynthOptions) -> None:
    """Shenzhen layout: shenzhen_metadata.csv + ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_L.png."""
    _tb_tree(
        root,
        options,
        csv_name="shenzhen_metadata.csv",
        image_dir="ChinaSet_AllFiles/CXR_png",
        prefix="CHNCXR",
        writer=_write_palette_png,
    )


def synth_montgomery(root: Path, options: SynthOptions) -> None:
    """Montgomery layout: montgomery_metadata.csv + MontgomerySet/CXR_png/MCUCXR_NNNN_L.png."""
    _tb_tree(
        root,
        options,
        csv_name="montgomery_metadata.csv",
        image_dir="MontgomerySet/CXR_png",
        prefix="MCUCXR",
        writer=_write_16bit_png,
    )


SYNTHESIZERS: dict[str, Callable[[Path, SynthOptions], None]] = {
    "shenzhencxr": synth_shenzhen,
    "montgomerycxr": synth_montgomery,
}


def synthesize(dataset: str, out_dir: Path, options: SynthOptions | None = None) -> Path:
    """Write a synthetic tree for ``dataset`` under ``out_dir/<folder>``; returns that folder."""
    spec = get_dataset_spec(dataset)
    writer = SYNTHESIZERS.get(spec.name)
    if writer is None:
        raise DatasetError(
            f"No synthetic layout for {spec.name} yet; available: {', '.join(SYNTHESIZERS)}."
        )
    root = Path(out_dir) / spec.folder
    writer(root, options or SynthOptions())
    return root
