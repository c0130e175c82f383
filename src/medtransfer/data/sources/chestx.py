"""ChestX-ray14 (NIH Clinical Center), the original's 7-class single-finding subset.

Published layout (docs/original-study.md#dataset-chestx)::

    <root>/Data_Entry_2017.csv    Image Index,Finding Labels,Follow-up #,Patient ID,...
    <root>/images/00000001_000.png
    <root>/images/00000001_001.png
    ...

The original needs the twelve ``images_0XX/`` folders flattened into ``images/``. Here the
NIH/Kaggle nesting ``<root>/images_001/images/*.png`` (or ``<root>/images_001/*.png``) is
read as it is when ``<root>/images/`` does not exist: the folders are listed (no image is
opened) and each row points at the folder holding its file. ``Data_Entry_2017_v2020.csv``
(the 2020 re-release) is read when ``Data_Entry_2017.csv`` is absent, with a problem saying
so. Columns are found by name (``Image Index``, ``Finding Labels``, ``Patient ID``).

Label rule of the original: split ``Finding Labels`` on ``|`` and keep a row only if it
has exactly one finding among Atelectasis 0, Cardiomegaly 1, Effusion 2, Infiltration 3,
Mass 4, Nodule 5, Pneumothorax 6. Multi-label rows, ``No Finding``, ``Pneumonia`` and the
other six findings are dropped silently (:func:`filter_counts` counts them); a string that
is none of the 14 findings nor ``No Finding`` is a problem. The patient is the
``Patient ID`` column (zero-padded to 8 digits like the file names), or the file name's
8-digit prefix where that column is absent or blank.

Original split: ``sample(frac=1, random_state=42)`` over all CSV rows, first
``floor(0.8 N)`` train, the rest test, and only then the filter; the iteration order is the
shuffled order of the kept rows within each split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    LabelOptions,
    Problem,
    SourceTable,
    original_columns,
    renumber_original_order,
)
from medtransfer.data.sources.layout import TOO_DEEP, Clue, layout_error, one_level_too_deep
from medtransfer.data.sources.problems import listed_again, row_problems
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError

CSV_NAME = "Data_Entry_2017.csv"
CSV_2020_NAME = "Data_Entry_2017_v2020.csv"
IMAGE_DIR = "images"
IMAGE_COLUMN = "Image Index"
FINDINGS_COLUMN = "Finding Labels"
PATIENT_COLUMN = "Patient ID"
#: The real file's header line, trailing comma included.
HEADER_LINE = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NO_FINDING = "No Finding"
#: The 14 findings of ChestX-ray14.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
#: The findings the original kept, in class-index order.
CLASS_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumothorax",
)
CLASS_NAMES = tuple(finding.lower() for finding in CLASS_FINDINGS)
CLASS_INDEX = {finding: index for index, finding in enumerate(CLASS_FINDINGS)}
#: Why a row is kept or dropped, as :func:`finding_categories` names it.
CATEGORIES = ("kept", "multi_label", "no_finding", "pneumonia", "other_finding", "unknown")
_SAMPLE_ROWS = 20
DATASET = "chestx"


def find_csv(root: Path) -> tuple[Path, list[Problem]]:
    """The index CSV under ``root`` and any problem about which one it is."""
    csv_path = root / CSV_NAME
    if csv_path.is_file():
        return csv_path, []
    if (root / CSV_2020_NAME).is_file():
        note = Problem(
            "layout",
            CSV_2020_NAME,
            f"{CSV_NAME} not found; reading the 2020 re-release instead. The original read "
            f"{CSV_NAME}; its split is reproduced only if both list the rows in the same order",
            f"put {CSV_NAME} in {root} to read exactly what the original read",
        )
        return root / CSV_2020_NAME, [note]
    raise layout_error(
        DATASET,
        csv_path,
        f"ChestX-ray14's index CSV (header {HEADER_LINE}) with the PNGs in {root / IMAGE_DIR}/",
        one_level_too_deep(root, CSV_NAME),
    )


def read_entries(csv_path: Path) -> pd.DataFrame:
    """``image``, ``findings`` and ``patient_id`` ("" when absent) columns as str, (N, 3)."""
    try:
        header = pd.read_csv(csv_path, nrows=0, index_col=False)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{csv_path} is empty: expected ChestX-ray14's index CSV.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    by_name = {str(column).strip().lower(): column for column in header.columns}
    missing = [c for c in (IMAGE_COLUMN, FINDINGS_COLUMN) if c.lower() not in by_name]
    if missing:
        found = ", ".join(str(c) for c in list(header.columns)[:12])
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; found {found}. "
            f"The first line must be the header {HEADER_LINE}"
        )
    wanted = [by_name[IMAGE_COLUMN.lower()], by_name[FINDINGS_COLUMN.lower()]]
    patient_column = by_name.get(PATIENT_COLUMN.lower())
    try:
        frame = pd.read_csv(
            csv_path,
            usecols=[*wanted, *([patient_column] if patient_column is not None else [])],
            dtype=str,
            keep_default_na=False,
            index_col=False,
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    patient_ids = frame[patient_column] if patient_column is not None else ""
    return pd.DataFrame(
        {
            "image": frame[wanted[0]].str.strip(),
            "findings": frame[wanted[1]],
            "patient_id": patient_ids,
        }
    ).reset_index(drop=True)


def finding_categories(findings: pd.Series) -> np.ndarray:
    """Why each row is kept or dropped: one of :data:`CATEGORIES` per row, (N,) object.

    ``findings``: (N,) raw ``Finding Labels`` strings (exact match, as the original).
    """
    findings = findings.reset_index(drop=True)
    tokens = findings.str.split("|")
    unknown = (~tokens.explode().isin([*FINDINGS, NO_FINDING])).groupby(level=0).any()
    conditions = [
        unknown.reindex(findings.index, fill_value=True).to_numpy(),
        (tokens.str.len() > 1).to_numpy(),
        (findings == NO_FINDING).to_numpy(),
        (findings == "Pneumonia").to_numpy(),
        findings.isin(CLASS_FINDINGS).to_numpy(),
    ]
    choices = ["unknown", "multi_label", "no_finding", "pneumonia", "kept"]
    return np.select(conditions, choices, "other_finding")


def finding_labels(findings: pd.Series, categories: np.ndarray) -> np.ndarray:
    """Class index per row, -1 where the row is dropped, (N,) int64."""
    labels = findings.reset_index(drop=True).map(CLASS_INDEX)
    labels = labels.where(categories == "kept", -1)
    return labels.fillna(-1).to_numpy(dtype=np.int64)


def filter_counts(root: Path) -> dict[str, int]:
    """How many rows the original's filter keeps and drops, and why, plus kept rows per class.

    Keys: ``rows``, the :data:`CATEGORIES` and one per class name.
    """
    entries = read_entries(find_csv(root)[0])
    categories = finding_categories(entries["findings"])
    labels = finding_labels(entries["findings"], categories)
    counts = {"rows": len(entries)}
    counts.update({name: int((categories == name).sum()) for name in CATEGORIES})
    counts.update({name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)})
    return counts


def patient_ids(entries: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """Patient per row (N,) and the rows whose ``Patient ID`` disagrees with the file name.

    ``Patient ID`` digits are zero-padded to 8 (``1`` → ``00000001``, as in the file names);
    a blank id falls back to the file name's 8-digit prefix.
    """
    prefix = entries["image"].str.extract(r"^(\d{8})_", expand=False).fillna("")
    given = entries["patient_id"].astype(str).str.strip()
    given = given.mask(given.str.fullmatch(r"\d+"), given.str.zfill(8))
    disagree = ((given != "") & (prefix != "") & (given != prefix)).to_numpy()
    return given.mask(given == "", prefix), np.flatnonzero(disagree)


def _image_folders(root: Path) -> list[Path]:
    """The NIH/Kaggle ``images_0XX/images`` (or ``images_0XX``) folders, sorted."""
    folders = []
    for folder in sorted(root.glob("images_*")):
        if folder.is_dir():
            folders.append(folder / IMAGE_DIR if (folder / IMAGE_DIR).is_dir() else folder)
    return folders


def _check_flat(root: Path, names: pd.Series) -> None:
    """Raise if ``<root>/images`` holds none of the sampled files and no PNG at its top."""
    flat = root / IMAGE_DIR
    sample = names.iloc[:_SAMPLE_ROWS]
    if sample.empty or any((flat / name).is_file() for name in sample):
        return
    nested = flat / IMAGE_DIR
    subfolders: list[str] = []
    if not nested.is_dir():
        with os.scandir(flat) as entries:
            for count, entry in enumerate(entries):
                if entry.is_file() and entry.name.lower().endswith(".png"):
                    return  # a partial download: `datasets check` lists the missing files
                if entry.is_dir():
                    subfolders.append(entry.name)
                if count > 2000:
                    break
    kaggle = _image_folders(root)
    raise layout_error(
        DATASET,
        flat / sample.iloc[0],
        f"ChestX-ray14's PNGs directly in {flat}",
        Clue(nested if nested.is_dir() else None, TOO_DEEP, f"move the images up into {flat}"),
        Clue(
            flat / sorted(subfolders)[0] if subfolders else None,
            f"{flat} holds folders ({', '.join(sorted(subfolders)[:4])}) instead of PNGs",
            f"flatten them so that {flat / sample.iloc[0]} exists, or remove the empty {flat} "
            f"and keep the NIH/Kaggle folders {root}/images_0XX/images/, which are read as "
            "they are",
        ),
        Clue(
            kaggle[0] if kaggle else None,
            f"{flat} holds no PNG, but {root}/images_0XX/ folders exist",
            f"remove the empty {flat} to read those as they are, or flatten them into it",
        ),
    )


def _missing_images_error(root: Path) -> DatasetError:
    return layout_error(
        DATASET,
        root / IMAGE_DIR,
        f"ChestX-ray14's PNGs in {root / IMAGE_DIR}/ (or the NIH/Kaggle folders "
        f"{root}/images_001/images/ ... images_012/images/)",
        one_level_too_deep(root, IMAGE_DIR),
        one_level_too_deep(root, "images_*"),
    )


def locate_images(root: Path, names: pd.Series, csv_name: str) -> tuple[pd.Series, list[Problem]]:
    """Path per image name, relative to ``root``, (N,) str ("" where not found), and problems.

    ``names``: (N,) file names indexed by their 0-based CSV data row (for the problems).

    Flat layout: ``images/<name>`` (files are not looked up one by one). Nested layout: the
    ``images_0XX`` folders are listed and each name mapped to the folder that holds it.
    """
    if (root / IMAGE_DIR).is_dir():
        _check_flat(root, names)
        return IMAGE_DIR + "/" + names, []
    folders = _image_folders(root)
    if not folders:
        raise _missing_images_error(root)
    listings = [
        pd.Series(folder.relative_to(root).as_posix(), index=os.listdir(folder))
        for folder in folders
    ]
    where = pd.concat(listings)
    where = where[~where.index.duplicated(keep="first")]
    folder_of = names.map(where)
    missing = names.index.to_numpy()[folder_of.isna().to_numpy()]
    problems = row_problems(
        "missing-file",
        csv_name,
        missing,
        lambda r: f"{names.loc[r]} is in none of {root}/images_0XX/; row skipped",
        "download the missing folder",
    )
    return (folder_of + "/" + names).fillna(""), problems


def read_chestx(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of ChestX-ray14 kept by the original's filter; see the module docstring."""
    csv_path, problems = find_csv(root)
    csv_name = csv_path.name
    entries = read_entries(csv_path)
    names, findings = entries["image"], entries["findings"]
    categories = finding_categories(findings)
    label = finding_labels(findings, categories)
    problems += row_problems(
        "unknown-label",
        csv_name,
        np.flatnonzero(categories == "unknown"),
        lambda r: _unknown_detail(findings.iloc[r]),
        "use the 14 ChestX-ray14 finding names or 'No Finding', joined by '|'",
    )
    problems += listed_again(csv_name, names, names.duplicated(keep="first").to_numpy())
    patients, disagree = patient_ids(entries)
    kept = label >= 0
    problems += row_problems(
        "patient-mismatch",
        csv_name,
        disagree[kept[disagree]],
        lambda r: f"Patient ID {entries['patient_id'].iloc[r]!r} disagrees with {names.iloc[r]}",
        "check the Patient ID column",
    )
    table = pd.DataFrame(
        {
            "name": names,
            "label": label,
            "patient": patients,
            **original_columns(len(entries)),
        }
    ).loc[kept]
    paths, located = locate_images(root, table["name"], csv_name)
    problems += located
    table = table.assign(path=paths.to_numpy()).loc[lambda t: t["path"] != ""]
    table = renumber_original_order(table)
    problems += [
        Problem(
            "empty-class",
            csv_name,
            f"no single-finding image of {CLASS_FINDINGS[index]!r}",
            "check the Finding Labels column",
        )
        for index in range(len(CLASS_FINDINGS))
        if not (table["label"] == index).any()
    ]
    return SourceTable(table.reset_index(drop=True), problems)


def _unknown_detail(findings: str) -> str:
    known = {*FINDINGS, NO_FINDING}
    unknown = [token for token in findings.split("|") if token not in known]
    if findings == "":
        return "Finding Labels is empty; row skipped"
    lowered = {name.lower().replace(" ", "_"): name for name in known}
    hints = [
        f" (did you mean {lowered[t.strip().lower().replace(' ', '_')]!r}?)"
        for t in unknown
        if t.strip().lower().replace(" ", "_") in lowered
    ]
    return f"unknown finding(s) {unknown} in {findings!r}; row skipped{''.join(hints[:1])}"


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="chestx",
        source_url="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        title="ChestX-ray14 (NIH), 7 single-finding classes",
        aliases=(
            "chestx-ray14",
            "chestxray14",
            "chestx-ray8",
            "chestxray8",
            "chestx14",
            "nih-chestxray",
            "nih-cxr14",
        ),
        folder="chestx",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="Patient ID column (else the file name's 8-digit prefix)",
        few_shot_resize="shorter",
        read=read_chestx,
        description=(
            "112,120 frontal chest radiographs of 30,805 NIH patients; the images with exactly "
            "one of 7 findings (atelectasis ... pneumothorax) are kept, as the original did."
        ),
    ),
)
