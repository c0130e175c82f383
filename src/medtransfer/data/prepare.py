"""Pre-resized copies of a dataset's images in the cache (``datasets prepare``).

Full-size CheXpert, EyePACS and BACH files are large (up to 4752×3168 JPEG or 2048×1536
TIFF): decoding them dominates extraction. ``prepare`` decodes every item once with the
dataset's own loader, shrinks it so its shorter side is ``size`` (never enlarging; bicubic,
aspect kept) and writes a lossless PNG under ``<cache>/prepared/<dataset>/<size>/``. The
data root is never written to.

``index.json`` maps each item to the size and modification time of the source file it was
made from; a copy is used for an item only while those still match, so replacing a source
image silently falls back to it (and the feature store's key changes). The index is
checkpointed while preparing, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.errors import ConfigError
from medtransfer.fsutil import atomic_write_json, sha256_json
from medtransfer.progress import progress as progress_display

INDEX = "index.json"
CHECKPOINT_EVERY = 2000


@dataclass(frozen=True)
class PixelSource:
    """Where the pixels of each manifest row come from.

    ``paths``: one item per manifest row (N,); ``loader``: decodes an item to RGB;
    ``fingerprint``: hash of the source files' sizes and mtimes; ``describe``: what the
    source is (part of the feature-store key).
    """

    paths: list[Path]
    loader: Callable[[Path], Image.Image]
    fingerprint: str
    describe: dict[str, object]


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


def file_stats(files: list[Path]) -> list[tuple[int, int]]:
    """(size, mtime_ns) per file, (-1, -1) when missing; each distinct file stat-ed once."""
    seen: dict[Path, tuple[int, int]] = {}
    for file in files:
        if file not in seen:
            seen[file] = _stat(file)
    return [seen[file] for file in files]


def original_pixels(manifest: Manifest) -> PixelSource:
    """The dataset's own files, decoded by its loader."""
    return PixelSource(
        paths=manifest.absolute_paths(),
        loader=manifest.loader,
        fingerprint=sha256_json(file_stats(manifest.files())),
        describe={"pixels": "original"},
    )


def prepared_dir(cache_root: Path, dataset_dir: str, size: int) -> Path:
    """Folder of the pre-resized copy of one dataset at one size."""
    return cache_root / "prepared" / dataset_dir / str(size)


def _target(folder: Path, item: str) -> Path:
    return folder / (item.replace("#", "__") + ".png")


def _shrink(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    shorter = min(width, height)
    if shorter <= size:
        return image
    scale = size / shorter
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(new, Image.Resampling.BICUBIC)


def _read_index(folder: Path, name: str = INDEX) -> dict[str, list[int]]:
    path = folder / name
    if not path.is_file():
        return {}
    try:
        return {k: list(v) for k, v in json.loads(path.read_text())["items"].items()}
    except (ValueError, KeyError, TypeError):
        return {}


def prepare(
    manifest: Manifest,
    cache_root: Path,
    dataset_dir: str,
    size: int,
    *,
    workers: int = 4,
    progress: bool = True,
) -> tuple[Path, int]:
    """Write pre-resized copies of every manifest item; returns (folder, items written now)."""
    if size < 16:
        raise ConfigError(f"--size {size} is too small; use the crop size or more (e.g. 256).")
    folder = prepared_dir(cache_root, dataset_dir, size)
    folder.mkdir(parents=True, exist_ok=True)
    done = _read_index(folder) | _read_index(folder, INDEX + ".partial")
    items = manifest.table["path"].tolist()
    stats = file_stats(manifest.files())
    todo = [
        (item, stat)
        for item, stat in zip(items, stats, strict=True)
        if done.get(item) != list(stat) or not _target(folder, item).is_file()
    ]

    def work(entry: tuple[str, tuple[int, int]]) -> tuple[str, list[int]]:
        item, stat = entry
        image = _shrink(manifest.loader(manifest.root / item), size)
        target = _target(folder, item)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        image.save(tmp, format="PNG")
        os.replace(tmp, target)
        return item, list(stat)

    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        progress_display(len(todo), f"preparing {size}px", "img", enabled=progress) as bar,
    ):
        for count, (item, stat) in enumerate(pool.map(work, todo), start=1):
            done[item] = stat
            bar.update(1)
            if count % CHECKPOINT_EVERY == 0:
                atomic_write_json(folder / (INDEX + ".partial"), {"size": size, "items": done})
    atomic_write_json(folder / INDEX, {"size": size, "items": done})
    (folder / (INDEX + ".partial")).unlink(missing_ok=True)
    return folder, len(todo)


def prepared_sizes(cache_root: Path, dataset_dir: str) -> list[int]:
    """The sizes (shorter side, px) of the pre-resized copies the cache holds for the
    dataset, ascending (complete or not)."""
    base = cache_root / "prepared" / dataset_dir
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())


def prepared_pixels(
    manifest: Manifest, cache_root: Path, dataset_dir: str, min_side: int
) -> PixelSource | None:
    """The smallest prepared copy whose side is at least ``min_side`` and covers every row.

    None when there is none, or when any source file changed since it was prepared.
    """
    base = cache_root / "prepared" / dataset_dir
    sizes = [size for size in prepared_sizes(cache_root, dataset_dir) if size >= min_side]
    if not sizes:
        return None
    items = manifest.table["path"].tolist()
    stats = [list(s) for s in file_stats(manifest.files())]
    for size in sizes:
        folder = base / str(size)
        index = _read_index(folder)
        if index and all(index.get(i) == s for i, s in zip(items, stats, strict=True)):
            return PixelSource(
                paths=[_target(folder, i) for i in items],
                loader=load_image,
                fingerprint=sha256_json(stats),
                describe={"pixels": "prepared", "size": size},
            )
    return None
