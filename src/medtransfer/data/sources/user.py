"""The user's own data: ``imagefolder:PATH`` and ``csv:PATH``.

``imagefolder:PATH``: one sub-folder per class (``PATH/<class>/<image>``); class names
are the folder names in sorted order; there are no patient ids.

``csv:PATH``: a CSV with a ``path`` column (relative to the CSV's folder, or absolute), a
``label`` column (class names or integers) and optionally ``class_name``, ``patient`` and
``split`` columns, the columns ``datasets export`` writes. Class names are the sorted
distinct labels (integers sort numerically), or, with a ``class_name`` column, its names
in the order of their integer labels. A ``split`` column (``train``/``val``/``test``) is
the split: the manifest keeps it instead of splitting (and cuts ``val`` from ``train``
when the column has no ``val`` row).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.data.sources.base import GIVEN_SPLIT, SPLITS, Problem, SourceTable
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
    """Root folder, class names and rows of a ``path,label[,class_name][,patient][,split]``
    CSV (see the module docstring)."""
    if not csv_path.is_file():
        raise DatasetError(f"csv:{csv_path}: no such file.")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "path" not in frame.columns or not {"label", "class_name"} & set(frame.columns):
        raise DatasetError(
            f"{csv_path}: found columns {list(frame.columns)}; the CSV needs a 'path' column "
            "and a 'label' column (or 'class_name'), and optionally 'patient' and 'split'."
        )
    if frame.empty:
        raise DatasetError(f"{csv_path}: the CSV has no rows.")
    frame = frame.apply(lambda column: column.str.strip())
    problems = []
    for key in ("label", "class_name"):
        if key in frame.columns:
            empty = frame.index[frame[key] == ""]
            problems += [
                Problem(
                    "unknown-label", f"{csv_path.name} row {i + 2}", f"{key} is empty", "fill it in"
                )
                for i in empty
            ]
            frame = frame.drop(empty)
    classes, labels = _classes(csv_path, frame)
    notes: dict[str, object] = {}
    if "class_name" in frame.columns:
        notes["class_names_from"] = f"the class_name column of {csv_path.name}"
    columns: dict[str, object] = {
        "path": frame["path"],
        "label": labels,
        "patient": frame["patient"] if "patient" in frame.columns else "",
    }
    if "split" in frame.columns:
        columns[GIVEN_SPLIT] = _splits(csv_path, frame["split"])
        notes["split_from"] = f"the split column of {csv_path.name}"
    table = pd.DataFrame(columns)
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
    return csv_path.parent, classes, SourceTable(table, problems, notes)


def _classes(csv_path: Path, frame: pd.DataFrame) -> tuple[tuple[str, ...], pd.Series]:
    """Class names and each row's class index (a Series over ``frame``'s index).

    Without a ``class_name`` column the names are the distinct labels in sorted order
    (integers numerically). With one, it names the classes, ordered by their integer label
    when the ``label`` column holds integers (an exported manifest reads back with the same
    indices), by name otherwise; a name given two labels (or a label two names) is an error.
    """
    if "class_name" not in frame.columns:
        return _classes_from_labels(frame["label"])
    labels = frame["label"] if "label" in frame.columns else None
    names = frame["class_name"]
    if labels is not None and all(_is_int(v) for v in set(labels)):
        pairs = pd.DataFrame({"name": names, "label": labels.astype(int)}).drop_duplicates()
        for column, other in (("name", "label"), ("label", "name")):
            clash = pairs[pairs[column].duplicated(keep=False)]
            if not clash.empty:
                value = clash[column].iloc[0]
                first = frame.index[(names if column == "name" else labels.astype(int)) == value]
                raise DatasetError(
                    f"{csv_path}: {column} {value!r} goes with more than one {other} "
                    f"({', '.join(map(str, sorted(set(clash[other]))))}; first at row "
                    f"{first[0] + 2}); each class needs one label and one class_name."
                )
        classes = tuple(pairs.sort_values("label")["name"])
    else:
        classes = tuple(sorted(set(names)))
    index = {name: i for i, name in enumerate(classes)}
    return classes, names.map(index)


def _classes_from_labels(labels: pd.Series) -> tuple[tuple[str, ...], pd.Series]:
    """The sorted distinct labels (integers numerically) and each row's index among them."""
    distinct = set(labels)
    if all(_is_int(v) for v in distinct):
        classes = tuple(str(v) for v in sorted({int(v) for v in distinct}))
        labels = labels.map(lambda v: str(int(v)))
    else:
        classes = tuple(sorted(distinct))
    index = {name: i for i, name in enumerate(classes)}
    return classes, labels.map(index)


def _is_int(value: str) -> bool:
    return value.lstrip("-").isdigit()


def _splits(csv_path: Path, column: pd.Series) -> pd.Series:
    """The ``split`` column, lower-cased; an error naming the first row that is not one of
    train, val, test."""
    values = column.str.lower()
    bad = values[~values.isin(SPLITS)]
    if not bad.empty:
        raise DatasetError(
            f"{csv_path} row {bad.index[0] + 2}: split {column[bad.index[0]]!r} is not one of "
            f"{', '.join(SPLITS)} ({len(bad)} such rows); fix the split column, or delete it "
            "to let --split-policy split the data."
        )
    return values
