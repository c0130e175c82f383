"""EyePACS / Kaggle Diabetic Retinopathy Detection (``diabetic_retinopathy``).

Published layout (the Kaggle competition download, with the post-competition solution
file saved as ``testLabels.csv``; docs/original-study.md#dataset-diabetic-retinopathy)::

    <root>/trainLabels.csv          image,level            10_left,0
    <root>/train/10_left.jpeg
    <root>/testLabels.csv           image,level,Usage      1_left,0,Private
    <root>/test/1_left.jpeg

Columns are used by position, as the original did: column 0 is the image id without
extension (``<patient>_left`` / ``<patient>_right``), column 1 the DR ``level`` 0..4
(0 no DR, 1 mild, 2 moderate, 3 severe, 4 proliferative). ``Usage`` (Public/Private) is
ignored; both kinds of test rows are used. The patient id is the number before
``_left``/``_right``; Kaggle's train and test patients are disjoint, and a number found in
both files is reported.

The original's split is the official one: ``trainLabels.csv`` rows are train, in the order
of ``sample(frac=1, random_state=42)`` over that file (this order decides the original's
validation hold-out); ``testLabels.csv`` rows are test, shuffled the same way on their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    LabelOptions,
    Problem,
    SourceTable,
    ViewPairs,
    generic_original,
)
from medtransfer.data.sources.layout import Clue, layout_error, one_level_too_deep
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError

CLASS_NAMES = ("no_dr", "mild", "moderate", "severe", "proliferative")
SPLIT_FILES = {"train": "trainLabels.csv", "test": "testLabels.csv"}
IMAGE_SUFFIX = ".jpeg"
_NAME = re.compile(r"^(?P<patient>\d+)_(?:left|right)$")
_EYE = re.compile(r"^(?P<folder>.*/)?(?P<patient>[^/]+)_(?P<eye>left|right)\.jpe?g$", re.IGNORECASE)
DATASET = "diabetic_retinopathy"


def _read_index(root: Path, split: str) -> pd.DataFrame:
    """The split's label CSV as strings, N rows; columns 0 (image id) and 1 (level) checked."""
    csv_path = root / SPLIT_FILES[split]
    if not csv_path.is_file():
        solution = root / "retinopathy_solution.csv"
        zipped = root / f"{SPLIT_FILES[split]}.zip"
        raise layout_error(
            DATASET,
            csv_path,
            f"the {split} label CSV (columns image,level{',Usage' if split == 'test' else ''}) "
            "of the Kaggle Diabetic Retinopathy release",
            Clue(
                solution if split == "test" and solution.is_file() else None,
                "it is the test labels under Kaggle's download name",
                f"rename it to {SPLIT_FILES[split]}",
            ),
            Clue(zipped if zipped.is_file() else None, "it is still zipped", "unzip it first"),
        )
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < 2:
        raise DatasetError(
            f"{csv_path}: expected the columns image,level (used by position), found "
            f"{list(frame.columns)}; the level column is missing."
        )
    if _NAME.match(str(frame.columns[0]).strip()):
        raise DatasetError(
            f"{csv_path}: the first line {','.join(map(str, frame.columns))!r} is a data row; "
            "the file needs the header line image,level as in the Kaggle release."
        )
    return frame


def _locate_images(root: Path, split: str, first: str | None) -> None:
    """Raise :class:`DatasetError` when the split's images are not in ``<root>/<split>/``.

    Probes only the first listed image (a ``stat``, no decoding) to catch a folder nested
    one level too deep or too shallow.
    """
    folder = root / split
    probe = f"{first}{IMAGE_SUFFIX}" if first else None
    expected = f"the {split} images as {split}/<image>{IMAGE_SUFFIX} next to {SPLIT_FILES[split]}"
    if folder.is_dir():
        if probe and not (folder / probe).is_file():
            nested = one_level_too_deep(folder, probe)
            if nested is not None:
                raise layout_error(DATASET, folder / probe, expected, nested)
        return
    flat = root / probe if probe else None
    raise layout_error(
        DATASET,
        folder,
        expected,
        Clue(
            flat if flat is not None and flat.is_file() else None,
            f"the {split} images are not in their sub-folder",
            f"move them into the sub-folder {split}/ next to {SPLIT_FILES[split]}",
        ),
        one_level_too_deep(root, split),
    )


def _row_problems(
    csv_name: str, names: pd.Series, raw_levels: pd.Series
) -> tuple[np.ndarray, pd.Series, list[Problem]]:
    """Check one split's rows (all N of them).

    Returns (bool keep mask (N,), integer level per row (N,; -1 where invalid), problems).
    Rows with an invalid level and repeats of an image id are dropped; a malformed image
    id is reported but kept.
    """
    numeric = pd.to_numeric(raw_levels.str.strip(), errors="coerce")
    valid = numeric.notna() & (numeric % 1 == 0) & numeric.between(0, 4)
    levels = numeric.where(valid, -1).astype("int64")
    bad_name = ~names.str.match(_NAME.pattern)
    duplicate = names.duplicated(keep="first")
    problems: list[Problem] = []
    for i in np.flatnonzero(~valid.to_numpy()):
        problems.append(
            Problem(
                "unknown-label",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                f"level {raw_levels.iat[i]!r} is not an integer 0..4; the row is left out",
                "correct the level (0 no DR .. 4 proliferative)",
            )
        )
    for i in np.flatnonzero(bad_name.to_numpy()):
        problems.append(
            Problem(
                "bad-name",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                "image id is not <patient number>_left or <patient number>_right; the whole id "
                "is used as its patient",
                "use the Kaggle id without extension, e.g. 10_left",
            )
        )
    for i in np.flatnonzero(duplicate.to_numpy()):
        problems.append(
            Problem(
                "duplicate",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                "image id listed more than once; only its first row is used",
                "remove the repeated row",
            )
        )
    return (valid & ~duplicate).to_numpy(), levels, problems


def _read_split(root: Path, split: str) -> tuple[pd.DataFrame, list[Problem]]:
    """One split's rows: path, label, patient, original_split, original_order (+ csv_row)."""
    frame = _read_index(root, split)
    names = frame.iloc[:, 0].astype(str).str.strip()
    _locate_images(root, split, names.iat[0] if len(names) else None)
    keep, levels, problems = _row_problems(SPLIT_FILES[split], names, frame.iloc[:, 1])
    _, position = generic_original(len(frame), n_train=len(frame))
    patient = names.str.extract(_NAME)["patient"]
    table = pd.DataFrame(
        {
            "path": f"{split}/" + names + IMAGE_SUFFIX,
            "label": levels,
            "patient": patient.fillna(names),
            "original_split": split,
            "original_order": position,
            "csv_row": np.arange(len(frame)) + 2,
        }
    )
    return table.loc[keep], problems


def _overlap_problems(train: pd.DataFrame, test: pd.DataFrame) -> list[Problem]:
    """A problem per patient number listed in both label files."""
    shared = np.intersect1d(train["patient"].unique(), test["patient"].unique())
    problems = []
    for patient in shared:
        train_row = int(train.loc[train["patient"] == patient, "csv_row"].iat[0])
        test_row = int(test.loc[test["patient"] == patient, "csv_row"].iat[0])
        problems.append(
            Problem(
                "patient-overlap",
                f"{SPLIT_FILES['train']} row {train_row} / {SPLIT_FILES['test']} row {test_row}",
                f"patient {patient} appears in both the train and the test file (Kaggle's are "
                "disjoint); the patient split keeps them together, the original split does not",
                "check that the label files come from the same Kaggle release",
            )
        )
    return problems


def read_diabetic_retinopathy(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of both official splits: train rows (file order), then test rows (file order).

    ``original_split`` is the file a row comes from; ``original_order`` its position in
    that file's ``sample(frac=1, random_state=42)`` order. See the module docstring.
    """
    train, train_problems = _read_split(root, "train")
    test, test_problems = _read_split(root, "test")
    problems = [*train_problems, *test_problems, *_overlap_problems(train, test)]
    return SourceTable(pd.concat([train, test], ignore_index=True), problems)


def left_right_pairs(table: pd.DataFrame) -> ViewPairs:
    """The left eye of each patient in ``table`` (manifest rows, columns ``path`` and
    ``label``) with the right eye of the same patient in the same folder, when both have the
    same DR level, read from the image ids (``<patient>_left.jpeg``), never from the order
    of the rows (the original assumed alternating CSV rows, docs/original-study.md#defect-e44).

    Skipped and counted: a left eye without a right eye, a right eye without a left eye,
    and a pair whose levels differ.
    """
    parts = table["path"].astype(str).str.extract(_EYE)
    eyes = pd.DataFrame(
        {
            "key": parts["folder"].fillna("") + parts["patient"].fillna(""),
            "eye": parts["eye"].str.lower(),
            "label": table["label"].to_numpy(),
            "row": np.arange(len(table)),
        }
    ).dropna(subset=["eye"])
    left = eyes[eyes["eye"] == "left"].drop_duplicates("key").set_index("key")
    right = eyes[eyes["eye"] == "right"].drop_duplicates("key").set_index("key")
    both = left.merge(right, left_index=True, right_index=True, suffixes=("_left", "_right"))
    same = both["label_left"] == both["label_right"]
    unpaired = {
        "left eye without a right eye": int((~left.index.isin(right.index)).sum()),
        "right eye without a left eye": int((~right.index.isin(left.index)).sum()),
        "left and right eye of different levels": int((~same).sum()),
    }
    return ViewPairs(
        both.loc[same, "row_left"].to_numpy(dtype=np.int64),
        both.loc[same, "row_right"].to_numpy(dtype=np.int64),
        ("left", "right"),
        {k: v for k, v in unpaired.items() if v},
    )


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="diabetic_retinopathy",
        source_url="https://www.kaggle.com/c/diabetic-retinopathy-detection/data",
        title="EyePACS / Kaggle Diabetic Retinopathy Detection",
        aliases=(
            "eyepacs",
            "kaggle-dr",
            "kaggle_dr",
            "diabetic-retinopathy",
            "diabeticretinopathy",
            "dr",
        ),
        folder="diabetic_retinopathy",
        class_names=CLASS_NAMES,
        metric=MEAN_PER_CLASS_ACCURACY,
        patients="the number before _left/_right in the image id (two eyes per patient)",
        few_shot_resize="shorter",
        read=read_diabetic_retinopathy,
        view_pairs=left_right_pairs,
        description="Retinal fundus photographs graded for diabetic retinopathy, levels 0-4; "
        "official Kaggle train (35,126) and test (53,576) sets.",
    ),
)
