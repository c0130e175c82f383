"""iChallenge-AMD fundus set from Baidu Research's iChallenge (``ichallenge_amd``).

Published layout (docs/original-study.md#dataset-ichallenge-amd)::

    <root>/Training400/AMD/A0001.jpg                  label 1 (AMD)
    <root>/Training400/Non-AMD/N0001.jpg              label 0
    <root>/amd_labels.csv                             optional: stem,label (header row)

The CSV is not part of the official download; the original needed it. Here it is
optional: without it the rows are the images found in the two class folders, in sorted
file-name order. With it, the CSV's rows and order are used (as the original did) and
every disagreement between the CSV, the folder and the file-name prefix is reported.

Labels: ``A*`` files in ``AMD/`` are 1, ``N*`` files in ``Non-AMD/`` are 0 (the CSV's label
decides when the CSV is there). The set has no patient ids (one image per eye, no subject
key in the release).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, original_columns
from medtransfer.data.sources.ichallenge_common import (
    IMAGE_SUFFIXES,
    list_images,
    read_index_csv,
    row_names,
    unlisted_problems,
)
from medtransfer.data.sources.layout import (
    TOO_SHALLOW,
    Clue,
    layout_error,
    one_level_too_deep,
)
from medtransfer.data.sources.problems import first_listing_only
from medtransfer.data.spec import ACCURACY, DatasetSpec

DATASET = "ichallenge_amd"
AMD_CLASS_NAMES = ("non_amd", "amd")
AMD_CSV = "amd_labels.csv"
AMD_DIR = "Training400"
AMD_FOLDERS = {1: "AMD", 0: "Non-AMD"}
AMD_PREFIXES = {"A": 1, "N": 0}
EXPECTED = (
    f"{AMD_DIR}/AMD/A*.jpg and {AMD_DIR}/Non-AMD/N*.jpg (the official iChallenge-AMD training "
    "archive)"
)


def _amd_image_dir(root: Path) -> Path:
    """``<root>/Training400``, or :class:`DatasetError` naming a mis-nested tree."""
    folder = root / AMD_DIR
    if folder.is_dir():
        if not any((folder / name).is_dir() for name in AMD_FOLDERS.values()):
            nested = one_level_too_deep(folder, AMD_FOLDERS[1]) or one_level_too_deep(
                folder, AMD_FOLDERS[0]
            )
            if nested is not None:
                raise layout_error(DATASET, folder / AMD_FOLDERS[1], EXPECTED, nested)
        return folder
    shallow = [root / name for name in AMD_FOLDERS.values() if (root / name).is_dir()]
    raise layout_error(
        DATASET,
        folder,
        EXPECTED,
        Clue(
            shallow[0] if shallow else None,
            f"{TOO_SHALLOW}: {root} holds AMD/ or Non-AMD/ directly",
            f"put both folders inside {folder}/ as in the official Training400 archive",
        ),
        one_level_too_deep(root, AMD_DIR),
    )


def amd_path(name: str, label: int) -> str:
    """Where the image file ``name`` of class ``label`` sits, relative to the dataset folder."""
    return f"{AMD_DIR}/{AMD_FOLDERS[label]}/{name}"


def _amd_prefix_problems(
    names: pd.Series, labels: np.ndarray, where: list[str], source: str
) -> list[Problem]:
    """A problem per file name (N,) whose A/N prefix is unknown or disagrees with its label."""
    problems = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        prefix = AMD_PREFIXES.get(name[:1].upper())
        if prefix is None:
            detail = (
                f"file name does not start with A (AMD) or N (non-AMD); the {source} label is used"
            )
            problems.append(Problem("bad-name", where[i], detail))
        elif prefix != label:
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"file name says {AMD_CLASS_NAMES[prefix]} but the {source} says "
                    f"{AMD_CLASS_NAMES[label]}; the {source}'s label is used",
                    "check which of the two is right",
                )
            )
    return problems


def _amd_from_folders(image_dir: Path) -> SourceTable:
    """Rows from the two class folders in sorted file-name order; the folder gives the label."""
    entries = sorted(
        (name, label)
        for label, folder in AMD_FOLDERS.items()
        for name in list_images(image_dir / folder)
    )
    names = pd.Series([name for name, _ in entries], dtype=str)
    labels = np.array([label for _, label in entries], dtype=np.int64)
    paths = [amd_path(name, label) for name, label in entries]
    problems = [
        Problem(
            "empty-class",
            f"{AMD_DIR}/{folder}",
            f"folder missing or holds no .jpg images; class {AMD_CLASS_NAMES[label]} is empty",
            "extract the full Training400 archive",
        )
        for label, folder in AMD_FOLDERS.items()
        if label not in labels
    ]
    stems = names.str.rsplit(".", n=1).str[0]
    duplicate = stems.duplicated(keep="first").to_numpy()
    problems.extend(
        Problem(
            "duplicate",
            paths[i],
            "an image with the same name is in the other class folder; only the first is used",
            "keep it in one folder only",
        )
        for i in np.flatnonzero(duplicate)
    )
    problems.extend(_amd_prefix_problems(names, labels, paths, "folder"))
    table = pd.DataFrame(
        {"path": paths, "label": labels, "patient": "", **original_columns(len(entries))}
    )
    return SourceTable(table.loc[~duplicate], problems)


def _amd_folder_problems(
    image_dir: Path, stems: pd.Series, labels: np.ndarray, keep: np.ndarray, where: list[str]
) -> list[Problem]:
    """CSV rows (N,) whose image sits in the other class folder, and unlisted images."""
    on_disk = {label: set(list_images(image_dir / folder)) for label, folder in AMD_FOLDERS.items()}
    problems = []
    for i in np.flatnonzero(keep):
        file, label = f"{stems.iat[i]}.jpg", int(labels[i])
        if file not in on_disk[label] and file in on_disk[1 - label]:
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"the CSV says {AMD_CLASS_NAMES[label]}, so the original reads "
                    f"{amd_path(file, label)}, but the image is in "
                    f"{AMD_DIR}/{AMD_FOLDERS[1 - label]}/",
                    "correct the label or move the file",
                )
            )
    listed = {f"{stem}.jpg" for stem in stems}
    for label, folder in AMD_FOLDERS.items():
        problems.extend(
            unlisted_problems(f"{AMD_DIR}/{folder}", sorted(on_disk[label]), listed, AMD_CSV)
        )
    return problems


def _amd_from_csv(root: Path, image_dir: Path) -> SourceTable:
    """Rows of ``amd_labels.csv`` in file order; the CSV's label decides the folder."""
    frame = read_index_csv(root / AMD_CSV, 2, "image stem, label 0/1")
    stems = frame.iloc[:, 0].astype(str).str.strip()
    raw = frame.iloc[:, 1].astype(str).str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    valid = numeric.isin([0, 1]).to_numpy()
    labels = numeric.where(valid, 0).astype("int64").to_numpy()
    where = row_names(AMD_CSV, stems)
    problems = [
        Problem(
            "unknown-label",
            where[i],
            f"label {raw.iat[i]!r} is not 0 (non-AMD) or 1 (AMD); the row is left out",
            "set the label to 0 or 1",
        )
        for i in np.flatnonzero(~valid)
    ]
    duplicate, duplicates = first_listing_only(stems, where)
    problems.extend(duplicates)
    problems.extend(
        Problem(
            "bad-name",
            where[i],
            "column 0 must be the file name without extension (.jpg is appended)",
            "remove the extension",
        )
        for i in np.flatnonzero(stems.str.lower().str.endswith(IMAGE_SUFFIXES).to_numpy())
    )
    keep = valid & ~duplicate
    kept = np.flatnonzero(keep)
    problems.extend(
        _amd_prefix_problems(stems[keep], labels[keep], [where[i] for i in kept], "CSV")
    )
    problems.extend(_amd_folder_problems(image_dir, stems, labels, keep, where))
    table = pd.DataFrame(
        {
            "path": [amd_path(f"{s}.jpg", int(v)) for s, v in zip(stems, labels, strict=True)],
            "label": labels,
            "patient": "",
            **original_columns(len(frame)),
        }
    )
    return SourceTable(table.loc[keep], problems)


def read_ichallenge_amd(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """iChallenge-AMD rows: ``amd_labels.csv``'s if present, else the two class folders."""
    image_dir = _amd_image_dir(root)
    if (root / AMD_CSV).is_file():
        return _amd_from_csv(root, image_dir)
    return _amd_from_folders(image_dir)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="ichallenge_amd",
        source_url="https://amd.grand-challenge.org/",
        title="iChallenge-AMD (age-related macular degeneration)",
        aliases=("amd", "ichallenge-amd", "ichallengeamd", "adam"),
        folder="ichallenge_amd",
        class_names=AMD_CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_ichallenge_amd,
        description="400 fundus photographs (89 AMD / 311 non-AMD) of the iChallenge-AMD "
        "(ADAM) training set; amd_labels.csv optional.",
    ),
)
