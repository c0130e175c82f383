"""Dataset speed: manifest build at CheXpert scale, and extraction from pre-resized copies.

(a) Build the manifest of a 224,316-row CheXpert-layout ``train.csv`` (no image exists, none
    is opened): the original walked every image and needed a pickle cache instead.
(b) Extraction throughput (images/s) of one backbone over full-size images decoded from
    their original files, against the same images read from the pre-resized copy that
    ``datasets prepare --size 256`` writes into the cache; the ratio in one run. The one-off
    preparation time is printed too.

    python benchmarks/datasets.py [--rows 224316] [--images 48] [--side 2500]
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
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        bench_manifest(Path(tmp) / "a", args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        bench_prepared(Path(tmp), args.images, args.side, args.model)


if __name__ == "__main__":
    main()
