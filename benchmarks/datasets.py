"""Dataset speed: manifest build at CheXpert scale, extraction from pre-resized copies, and
the index readers at the published sizes.

(a) Build the manifest of a 224,316-row CheXpert-layout ``train.csv`` (no image exists, none
    is opened): the original walked every image and needed a pickle cache instead.
(b) Extraction throughput (images/s) of one backbone over full-size images decoded from
    their original files, against the same images read from the pre-resized copy that
    ``datasets prepare --size 256`` writes into the cache; the ratio in one run. The one-off
    preparation time is printed too.
(c) Reading each large index file at its published size (CheXpert 223,414 rows, ChestX-ray14
    112,120, EyePACS 35,126 + 53,576, STOIC 2,000), opening no image: seconds and rows/s,
    beside the budget the reader tests once asserted (those tests now check correctness
    only; a wall-clock limit in a unit test fails on a busy machine and passes a slow one).

    python benchmarks/datasets.py [--rows 224316] [--images 48] [--side 2500] [--only c]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from medtransfer.config import resolve_roots
from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import build_manifest
from medtransfer.data.prepare import original_pixels, prepare, prepared_pixels
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.chestx import CSV_NAME as CHESTX_CSV
from medtransfer.data.sources.chestx import HEADER_LINE, read_chestx
from medtransfer.data.sources.chexpert import read_chexpert
from medtransfer.data.sources.eyepacs import read_diabetic_retinopathy
from medtransfer.data.sources.stoic import read_stoic
from medtransfer.data.transforms import ImageFiles, Preprocessing
from medtransfer.features.store import get_features
from medtransfer.models.loader import load_backbone

CHEXPERT_COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def chexpert_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A train.csv in the official CheXpert layout with ``rows`` rows (labels random)."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(1, 64541, size=rows)
    study = rng.integers(1, 10, size=rows)
    view = np.where(rng.random(rows) < 0.85, "view1_frontal.jpg", "view2_lateral.jpg")
    paths = [
        f"CheXpert-v1.0/train/patient{p:05d}/study{s}/{v}"
        for p, s, v in zip(patient, study, view, strict=True)
    ]
    frame = pd.DataFrame({"Path": paths})
    frame["Sex"] = rng.choice(["Male", "Female"], size=rows)
    frame["Age"] = rng.integers(18, 90, size=rows)
    frame["Frontal/Lateral"] = np.where(view == "view1_frontal.jpg", "Frontal", "Lateral")
    frame["AP/PA"] = rng.choice(["AP", "PA", ""], size=rows)
    for column in CHEXPERT_COLUMNS[5:]:
        frame[column] = rng.choice([1.0, 0.0, -1.0, np.nan], size=rows, p=[0.2, 0.1, 0.05, 0.65])
    frame.to_csv(path, index=False)
    for sample in paths[:20]:  # the reader looks for the image tree (it opens no image)
        (path.parent / sample).parent.mkdir(parents=True, exist_ok=True)
        (path.parent / sample).touch()


def bench_manifest(tmp: Path, rows: int) -> None:
    root = tmp / "data" / "chexpert"
    root.mkdir(parents=True)
    chexpert_csv(root / "train.csv", rows)
    start = time.perf_counter()
    manifest = build_manifest(resolve_dataset("chexpert", tmp / "data"), split_policy="patient")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    build_manifest(resolve_dataset("chexpert", tmp / "data"), split_policy="original")
    original_s = time.perf_counter() - start
    print(
        f"(a) manifest of a {rows}-row CheXpert train.csv: {seconds:.2f} s (patient split), "
        f"{original_s:.2f} s (original split); {len(manifest)} rows kept, no image opened"
    )


def _chestx_index(root: Path, rows: int) -> None:
    """Data_Entry_2017.csv with ``rows`` rows (findings cycle through 5 kinds) and images/."""
    (root / "images").mkdir(parents=True)
    findings = ["Effusion", "No Finding", "Mass|Nodule", "Atelectasis", "Hernia"]
    lines = [HEADER_LINE] + [
        f"{i // 4 + 1:08d}_{i % 4:03d}.png,{findings[i % 5]},{i % 4},{i // 4 + 1},"
        "50,M,PA,2500,2048,0.143,0.143,"
        for i in range(rows)
    ]
    (root / CHESTX_CSV).write_text("\n".join(lines) + "\n")
    Image.new("L", (4, 4)).save(root / "images" / "00000001_000.png")


def _eyepacs_index(root: Path, train: int, test: int) -> None:
    """trainLabels.csv / testLabels.csv with ``train`` / ``test`` eyes and the two folders."""
    rng = np.random.default_rng(0)
    for name, n, offset, extra in (
        ("train", train, 1, {}),
        ("test", test, 10_000_000, {"Usage": "Private"}),
    ):
        (root / name).mkdir(parents=True)
        patients = np.arange(offset, offset + (n + 1) // 2)
        sides = np.tile(["_left", "_right"], len(patients))
        eyes = np.char.add(np.repeat(patients, 2).astype(str), sides)[:n]
        frame = pd.DataFrame({"image": eyes, "level": rng.integers(0, 5, n), **extra})
        frame.to_csv(root / f"{name}Labels.csv", index=False)


def _stoic_index(root: Path, rows: int) -> None:
    """metadata/reference.csv with ``rows`` patients and an empty data/mha folder."""
    rng = np.random.default_rng(0)
    (root / "metadata").mkdir(parents=True)
    (root / "data" / "mha").mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "PatientID": np.arange(rows).astype(str),
            "probCOVID": rng.integers(0, 2, rows),
            "probSevere": rng.integers(0, 2, rows),
        }
    )
    frame.to_csv(root / "metadata" / "reference.csv", index=False)


def bench_readers(tmp: Path) -> None:
    """(c): each reader once on an index of the published size; the former test budgets."""
    cases = [
        ("chexpert", 223_414, 5.0, lambda r: chexpert_csv(r / "train.csv", 223_414), read_chexpert),
        ("chestx", 112_120, 5.0, lambda r: _chestx_index(r, 112_120), read_chestx),
        (
            "diabetic_retinopathy",
            35_126 + 53_576,
            5.0,
            lambda r: _eyepacs_index(r, 35_126, 53_576),
            read_diabetic_retinopathy,
        ),
        ("stoic", 2_000, 3.0, lambda r: _stoic_index(r, 2_000), read_stoic),
    ]
    print("(c) index readers at the published sizes (no image opened):")
    for name, rows, budget, write, read in cases:
        root = tmp / name
        root.mkdir(parents=True)
        write(root)
        start = time.perf_counter()
        table = read(root, LabelOptions()).table
        seconds = time.perf_counter() - start
        print(
            f"    {name:<21} {rows:>7} rows: {seconds:5.2f} s ({rows / seconds:9.0f} rows/s; "
            f"{len(table)} kept; the test's former budget {budget:.0f} s)"
        )


def bench_prepared(tmp: Path, n_images: int, side: int, model: str) -> None:
    tree = tmp / "big"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(side // 8, side // 8), dtype=np.uint8)
    for i in range(n_images):
        image = Image.fromarray(np.roll(base, i, axis=0)).resize((side, int(side * 1.2)))
        folder = tree / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:04d}.jpg", quality=95)
    roots = resolve_roots(tmp / "data", tmp / "cache", tmp / "results")
    manifest = build_manifest(resolve_dataset(f"imagefolder:{tree}", roots.data))
    backbone = load_backbone(model, roots, progress=False)
    preprocessing = Preprocessing(image_size=224, resize="shorter")

    def run(pixels, store: str) -> float:
        start = time.perf_counter()
        get_features(
            backbone, manifest, preprocessing, tmp / store,
            weights_sha256=backbone.weights_sha256, normalization=backbone.normalization,
            arch=backbone.spec.arch, progress=False, pixels=pixels,
        )  # fmt: skip
        return time.perf_counter() - start

    def decode_only(pixels) -> float:
        start = time.perf_counter()
        dataset = ImageFiles(pixels.paths, preprocessing, pixels.loader)
        for i in range(len(dataset)):
            dataset[i]
        return time.perf_counter() - start

    full = original_pixels(manifest)
    full_s, full_decode_s = run(full, "store-full"), decode_only(full)
    start = time.perf_counter()
    prepare(manifest, roots.cache, "big", 256, workers=2, progress=False)
    prepare_s = time.perf_counter() - start
    pixels = prepared_pixels(manifest, roots.cache, "big", 224)
    assert pixels is not None
    fast_s, fast_decode_s = run(pixels, "store-prepared"), decode_only(pixels)
    print(
        f"(b) {n_images} JPEGs of {side}x{int(side * 1.2)} -> 224 px; one-off prepare "
        f"at 256 px: {prepare_s:.2f} s\n"
        f"    decode+resize only : full-size {n_images / full_decode_s:7.1f} img/s, "
        f"prepared {n_images / fast_decode_s:7.1f} img/s, "
        f"speed-up {full_decode_s / fast_decode_s:.1f}x\n"
        f"    extraction ({model}): full-size {n_images / full_s:7.1f} img/s, "
        f"prepared {n_images / fast_s:7.1f} img/s, speed-up {full_s / fast_s:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=224316)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--side", type=int, default=2500)
    parser.add_argument("--model", default="random_r18")
    parser.add_argument("--only", choices=("a", "b", "c"), help="run one part only")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads")
    parts = {
        "a": lambda tmp: bench_manifest(tmp / "a", args.rows),
        "b": lambda tmp: bench_prepared(tmp, args.images, args.side, args.model),
        "c": bench_readers,
    }
    for key, part in parts.items():
        if args.only in (None, key):
            with tempfile.TemporaryDirectory() as tmp:
                part(Path(tmp))


if __name__ == "__main__":
    main()
