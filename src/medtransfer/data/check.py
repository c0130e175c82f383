"""``datasets check``: every problem of a dataset on disk, each naming its file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from medtransfer.data.images import load_image, verify_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import Problem
from medtransfer.errors import DatasetError


def _verify(path: Path, loader: Callable[[Path], Image.Image] = load_image) -> Problem | None:
    file = Path(str(path).split("#", 1)[0])
    if not file.is_file():
        return Problem(
            "missing-file",
            str(path),
            "listed in the index file but not on disk",
            "restore the file, or remove its row from the index file",
        )
    try:
        if loader is load_image:
            verify_image(path)
        else:
            loader(path).load()
    except DatasetError as exc:
        return Problem("unreadable-image", str(path), str(exc), "re-download or remove it")
    return None


def check_images(
    paths: Iterable[Path],
    *,
    workers: int = 4,
    progress: bool = True,
    loader: Callable[[Path], Image.Image] = load_image,
) -> list[Problem]:
    """Open every item fully; a problem for each missing, truncated or undecodable file."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            tqdm(
                pool.map(lambda path: _verify(path, loader), paths),
                total=len(paths),
                desc="checking images",
                unit="img",
                disable=not progress,
            )
        )
    return [p for p in results if p is not None]


def check_manifest(manifest: Manifest, *, workers: int = 4, progress: bool = True) -> list[Problem]:
    """The source's own problems, duplicated rows, empty classes and every bad image file."""
    problems = list(manifest.problems)
    duplicated = manifest.table["path"].duplicated(keep="first")
    for path in manifest.table.loc[duplicated, "path"]:
        problems.append(
            Problem("duplicate", str(manifest.root / path), "listed more than once", "remove a row")
        )
    present = set(manifest.table["label"])
    for index, name in enumerate(manifest.class_names):
        if index not in present:
            problems.append(
                Problem("empty-class", f"{manifest.dataset}:{name}", "no image has this class")
            )
    problems.extend(
        check_images(
            manifest.absolute_paths(), workers=workers, progress=progress, loader=manifest.loader
        )
    )
    return problems
