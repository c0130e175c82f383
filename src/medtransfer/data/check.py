"""``datasets check``: every problem of a dataset on disk, each naming its file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from medtransfer.data.images import load_image, verify_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import Problem
from medtransfer.errors import DatasetError


@dataclass(frozen=True)
class ItemCheck:
    """The outcome of opening one item: a problem, or the sha256 of its file's bytes."""

    path: Path
    problem: Problem | None
    digest: str | None


def _file_of(path: Path) -> Path:
    return Path(str(path).split("#", 1)[0])


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, loader: Callable[[Path], Image.Image] = load_image) -> ItemCheck:
    file = _file_of(path)
    if not file.is_file():
        problem = Problem(
            "missing-file",
            str(path),
            "listed in the index file but not on disk",
            "restore the file, or remove its row from the index file",
        )
        return ItemCheck(path, problem, None)
    try:
        if loader is load_image:
            verify_image(path)
        else:
            loader(path).load()
    except DatasetError as exc:
        problem = Problem.from_error(
            "unreadable-image", str(path), exc, "re-download it or remove it from the dataset"
        )
        return ItemCheck(path, problem, None)
    # items inside one file (file#key) share the file's bytes: no content check for them
    return ItemCheck(path, None, _sha256(file) if file == path else None)


def check_images(
    paths: Iterable[Path],
    *,
    workers: int = 4,
    progress: bool = True,
    loader: Callable[[Path], Image.Image] = load_image,
) -> list[Problem]:
    """Open every item fully; a problem for each missing, truncated or undecodable file,
    and for each file whose bytes duplicate an earlier one (a leak across splits)."""
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
    problems = [r.problem for r in results if r.problem is not None]
    first: dict[str, Path] = {}
    for result in results:
        if result.digest is None:
            continue
        if result.digest in first:
            problems.append(
                Problem(
                    "duplicate",
                    str(result.path),
                    f"same bytes as {first[result.digest]}",
                    "remove one copy, or both rows if their labels disagree",
                )
            )
        else:
            first[result.digest] = result.path
    return problems


def check_manifest(manifest: Manifest, *, workers: int = 4, progress: bool = True) -> list[Problem]:
    """The source's own problems, duplicated rows, empty classes and every bad image file."""
    problems = list(manifest.problems)
    duplicated = manifest.table["path"].duplicated(keep="first")
    for path in manifest.table.loc[duplicated, "path"]:
        problems.append(
            Problem("duplicate", str(manifest.root / path), "listed more than once", "remove a row")
        )
    present = set(manifest.table["label"])
    reported = " ".join(f"{p.file} {p.detail}" for p in problems if p.kind == "empty-class")
    for index, name in enumerate(manifest.class_names):
        if index not in present and name not in reported:  # the source named it already
            problems.append(
                Problem(
                    "empty-class",
                    f"{manifest.dataset}:{name}",
                    "no image has this class",
                    "add its images, or run the jobs with --drop-empty-classes",
                )
            )
    unique = manifest.table.drop_duplicates("path")["path"]
    problems.extend(
        check_images(
            [manifest.root / p for p in unique],
            workers=workers,
            progress=progress,
            loader=manifest.loader,
        )
    )
    return problems
