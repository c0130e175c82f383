"""The user's own data: ``imagefolder:PATH`` and ``csv:PATH``.

``imagefolder:PATH``: one sub-folder per class (``PATH/<class>/<image>``); class names
are the folder names in sorted order; there are no patient ids.

``csv:PATH``: a CSV with a ``path`` column (relative to the CSV's folder, or absolute), a
``label`` column (class names or integers) and optionally a ``patient`` column. Class
names are the sorted distinct labels (integers sort numerically).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.data.sources.base import Problem, SourceTable
from medtransfer.errors import DatasetError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
)


def scan_imagefolder(root: Path) -> tuple[tuple[str, ...], SourceTable]:
    """Class names and rows of a one-folder-per-class tree at ``root``."""
    if not root.is_dir():
        raise DatasetError(f"imagefolder:{root}: no such folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"imagefolder:{root}: no class folders found; expected {root}/<class>/<image files>."
        )
    rows: list[tuple[str, int, str]] = []
    problems: list[Problem] = []
    for index, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            problems.append(
                Problem("empty-class", f"{root / name}", "class folder holds no image files")
            )
        rows.extend((p.relative_to(root).as_posix(), index, "") for p in files)
    table = pd.DataFrame(rows, columns=["path", "label", "patient"])
    return tuple(classes), SourceTable(table, problems)


def read_user_csv(csv_path: Path) -> tuple[Path, tuple[str, ...], SourceTable]:
    """Root folder, class names and rows of a ``path,label[,patient]`` CSV."""
    if not csv_path.is_file():
        raise DatasetError(f"csv:{csv_path}: no such file.")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {missing}; found {list(frame.columns)}. The CSV needs "
            "'path' and 'label' columns (and optionally 'patient')."
        )
    if frame.empty:
        raise DatasetError(f"{csv_path}: the CSV has no rows.")
    labels = frame["label"].str.strip()
    problems = [
        Problem("unknown-label", f"{csv_path.name} row {i + 2}", "label is empty", "fill it in")
        for i in labels.index[labels == ""]
    ]
    keep = labels != ""
    frame, labels = frame[keep], labels[keep]
    distinct = set(labels)
    if all(v.lstrip("-").isdigit() for v in distinct):
        classes = tuple(str(v) for v in sorted(int(v) for v in distinct))
        labels = labels.map(lambda v: str(int(v)))
    else:
        classes = tuple(sorted(distinct))
    index = {name: i for i, name in enumerate(classes)}
    table = pd.DataFrame(
        {
            "path": frame["path"].str.strip(),
            "label": labels.map(index),
            "patient": frame["patient"].str.strip() if "patient" in frame.columns else "",
        }
    )
    duplicated = table["path"].duplicated(keep="first")
    for i in table.index[duplicated]:
        problems.append(
            Problem(
                "duplicate",
                f"{csv_path.name} row {i + 2} ({table.at[i, 'path']})",
                "the same image is listed more than once; later rows are ignored",
                "remove the duplicated row",
            )
        )
    table = table[~duplicated]
    return csv_path.parent, classes, SourceTable(table, problems)
