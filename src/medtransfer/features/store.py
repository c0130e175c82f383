"""The feature store: each image goes through a frozen backbone once.

Features live in ``<cache>/features/<model>/<dataset>/<key16>/``:

``features.npy``  float32 (N, D), read back memory-mapped
``rows.csv``      the manifest rows the features belong to, in the same order
``meta.json``     the key's ingredients, shapes, timings

The key is a hash of (weights sha256, input normalisation, architecture, the manifest's
items in order (not its labels or splits, so every split and label policy of a dataset
shares one extraction), the image files' sizes and modification times, where the pixels
come from, preprocessing, the effective precision of the forward passes). A store folder appears
only once complete (it is built under a temporary name and renamed), so an interrupted
extraction never reads as finished. Work is saved in shards under ``<key16>.partial/``
as it goes, and a re-run resumes from the last finished shard.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medtransfer.compute import autocast, is_cuda
from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.prepare import PixelSource, original_pixels
from medtransfer.data.transforms import ImageFiles, Preprocessing
from medtransfer.errors import MedTransferError
from medtransfer.fsutil import atomic_directory, atomic_write_json, sha256_json
from medtransfer.progress import progress as progress_display

STORE_VERSION = 1


@dataclass(frozen=True)
class FeatureSet:
    """Features of every manifest row.

    ``features``: (N, D) float32 (memory-mapped); ``labels``: (N,) int64; ``computed``:
    whether this call ran forward passes (False when read from the store);
    ``seconds``: time spent extracting in this call; ``pixels``: where the images were
    decoded from (the original files or a pre-resized copy).
    """

    features: np.ndarray
    labels: np.ndarray
    key: str
    path: Path
    computed: bool
    seconds: float
    pixels: dict[str, object]


def feature_key(
    weights_sha256: str,
    normalization: str,
    arch: str,
    manifest: Manifest,
    preprocessing: Preprocessing,
    pixels: PixelSource,
    precision: str = "fp32",
) -> str:
    """The store key: a sha256 over everything the features depend on."""
    return sha256_json(
        {
            "version": STORE_VERSION,
            "weights_sha256": weights_sha256,
            "normalization": normalization,
            "arch": arch,
            "rows": manifest.rows_hash,
            "files": pixels.fingerprint,
            "pixels": pixels.describe,
            "preprocessing": preprocessing.describe(),
            "precision": precision,
        }
    )


def _shards(n_rows: int, shard_rows: int) -> Iterator[tuple[int, int, int]]:
    for index, start in enumerate(range(0, n_rows, shard_rows)):
        yield index, start, min(start + shard_rows, n_rows)


def extract(
    backbone: torch.nn.Module,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    description: str = "features",
    loader: Callable[[Path], Image.Image] = load_image,
    precision: str = "fp32",
) -> np.ndarray:
    """Forward every image once: returns (len(paths), D) float32.

    The backbone is put in eval mode and run under ``torch.inference_mode`` in
    ``precision`` (an effective precision of :mod:`medtransfer.compute`). Images are decoded
    by ``workers`` processes.
    """
    backbone.eval().to(device)
    loader = torch.utils.data.DataLoader(
        ImageFiles(list(paths), preprocessing, loader),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=is_cuda(device),
    )
    chunks: list[np.ndarray] = []
    with (
        torch.inference_mode(),
        autocast(device, precision),
        progress_display(len(paths), description, "img", enabled=progress) as bar,
    ):
        try:
            for images in loader:
                output = backbone(images.to(device, non_blocking=True))
                chunks.append(output.float().cpu().numpy())
                bar.update(len(images))
        except MedTransferError as exc:
            raise _unwrap_worker_error(exc) from None
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _unwrap_worker_error(exc: MedTransferError) -> MedTransferError:
    """The user's message of an error re-raised by a DataLoader worker, without the traceback.

    A worker's exception comes back as the same type whose message is "Caught X in
    DataLoader worker process N. Original Traceback ...", ending in ``module.X: message``.
    """
    text = str(exc)
    if not text.startswith("Caught "):
        return exc
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last.removeprefix(prefix))


def get_features(
    backbone: torch.nn.Module,
    manifest: Manifest,
    preprocessing: Preprocessing,
    store_root: Path,
    *,
    weights_sha256: str,
    normalization: str,
    arch: str,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    shard_rows: int = 4096,
    pixels: PixelSource | None = None,
    precision: str = "fp32",
) -> FeatureSet:
    """Features of every row of ``manifest``, from the store or extracted now (once).

    ``pixels`` says where the images are decoded from: the dataset's own files (default) or
    a pre-resized copy (:func:`medtransfer.data.prepare.prepared_pixels`); ``precision`` is
    the effective precision of the forward passes (part of the key: features computed in
    bf16 are never handed to an fp32 run).
    """
    pixels = pixels or original_pixels(manifest)
    paths = pixels.paths
    key = feature_key(
        weights_sha256, normalization, arch, manifest, preprocessing, pixels, precision
    )
    final = store_root / key[:16]
    labels = manifest.labels
    if (final / "meta.json").is_file():
        return FeatureSet(_open(final), labels, key, final, False, 0.0, pixels.describe)

    partial = store_root / f"{key[:16]}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, start, stop in _shards(len(paths), shard_rows):
        shard = partial / f"shard-{index:05d}.npy"
        if shard.is_file():
            continue  # finished by an earlier, interrupted run
        block = extract(
            backbone,
            paths[start:stop],
            preprocessing,
            device=device,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            description=f"features {start}-{stop} of {len(paths)}",
            loader=pixels.loader,
            precision=precision,
        )
        tmp = partial / f".shard-{index:05d}.tmp.npy"
        np.save(tmp, block)
        os.replace(tmp, shard)
    seconds = time.perf_counter() - started

    with atomic_directory(final) as tmp_dir:
        shard_files = [
            partial / f"shard-{i:05d}.npy" for i, _, _ in _shards(len(paths), shard_rows)
        ]
        blocks = [np.load(f, mmap_mode="r") for f in shard_files]
        dim = blocks[0].shape[1]
        out = np.lib.format.open_memmap(
            tmp_dir / "features.npy", mode="w+", dtype=np.float32, shape=(len(paths), dim)
        )
        row = 0
        for block in blocks:
            out[row : row + len(block)] = block
            row += len(block)
        out.flush()
        del out
        manifest.table.to_csv(tmp_dir / "rows.csv", index=False)
        atomic_write_json(
            tmp_dir / "meta.json",
            {
                "key": key,
                "dataset": manifest.dataset,
                "manifest_hash": manifest.hash,
                "weights_sha256": weights_sha256,
                "normalization": normalization,
                "arch": arch,
                "preprocessing": preprocessing.describe(),
                "pixels": pixels.describe,
                "precision": precision,
                "device": device,
                "shape": [len(paths), dim],
                "extraction_seconds": seconds,
            },
        )
    shutil.rmtree(partial, ignore_errors=True)
    return FeatureSet(_open(final), labels, key, final, True, seconds, pixels.describe)


def _open(folder: Path) -> np.ndarray:
    features = np.load(folder / "features.npy", mmap_mode="r")
    meta = json.loads((folder / "meta.json").read_text())
    if list(features.shape) != meta["shape"]:
        raise RuntimeError(f"{folder}: feature store is damaged; delete the folder and re-run.")
    return features
