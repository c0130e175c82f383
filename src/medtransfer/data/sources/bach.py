"""BACH, the ICIAR 2018 Grand Challenge on BreAst Cancer Histology images (``bach``).

Published layout (the challenge's ``ICIAR2018_BACH_Challenge`` archive;
docs/original-study.md#dataset-bach)::

    <root>/ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv   no header: file,class
    <root>/ICIAR2018_BACH_Challenge/Photos/Normal/n001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/Benign/b001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/InSitu/is001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/Invasive/iv001.tif

The CSV has no header row: column 0 is the file name, column 1 the class string, which is
also the image's folder. Normal 0, Benign 1, InSitu 2, Invasive 3 (plain categorical
classes, whatever the original's README says). Another class string is reported with its
row and the row left out (the original raised ``ValueError`` on it); a file-name prefix
(``n``/``b``/``is``/``iv``) that disagrees with the class is reported. The release has no
patient ids, so each image is its own patient. The original's split is the generic one:
``sample(frac=1, random_state=42)`` over the CSV's 400 rows, 320 train / 80 test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, original_columns
from medtransfer.data.sources.layout import TOO_SHALLOW, Clue, layout_error, one_level_too_deep
from medtransfer.data.sources.problems import first_listing_only
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError

CLASS_STRINGS = ("Normal", "Benign", "InSitu", "Invasive")
CLASS_NAMES = ("normal", "benign", "in_situ", "invasive")
PREFIXES = {"n": 0, "b": 1, "is": 2, "iv": 3}
CHALLENGE_DIR = "ICIAR2018_BACH_Challenge"
PHOTOS_DIR = f"{CHALLENGE_DIR}/Photos"
CSV_NAME = "microscopy_ground_truth.csv"
_PREFIX = re.compile(r"^(is|iv|n|b)\d", re.IGNORECASE)
DATASET = "bach"


def _photos_dir(root: Path) -> Path:
    """``<root>/ICIAR2018_BACH_Challenge/Photos``, or :class:`DatasetError` on bad nesting."""
    folder = root / PHOTOS_DIR
    if folder.is_dir():
        return folder
    shallow = root / "Photos"
    raise layout_error(
        DATASET,
        folder,
        f"{PHOTOS_DIR}/{CSV_NAME} and the class folders {', '.join(CLASS_STRINGS)} of the "
        "ICIAR 2018 BACH archive",
        Clue(
            shallow if shallow.is_dir() else None,
            TOO_SHALLOW,
            f"put Photos/ inside {root / CHALLENGE_DIR}/ as in the challenge archive",
        ),
        one_level_too_deep(root, PHOTOS_DIR),
        one_level_too_deep(root / CHALLENGE_DIR, "Photos"),
    )


def _read_ground_truth(csv_path: Path) -> pd.DataFrame:
    """The header-less ground-truth CSV as strings, N rows of (file name, class string)."""
    if not csv_path.is_file():
        raise layout_error(
            DATASET,
            csv_path,
            "the ground-truth CSV (no header; file name, class string) of the challenge "
            "archive next to the class folders",
        )
    try:
        frame = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < 2:
        raise DatasetError(
            f"{csv_path}: expected 2 columns (file name, class string), found {frame.shape[1]}; "
            "the class column is missing."
        )
    return frame


def _class_problems(raw: pd.Series, where: list[str]) -> tuple[np.ndarray, list[Problem]]:
    """Class index per row (N,; -1 for an unknown string) and a problem per unknown one."""
    classes = raw.map({name: i for i, name in enumerate(CLASS_STRINGS)})
    lookup = {name.lower(): name for name in CLASS_STRINGS}
    problems = []
    for i in np.flatnonzero(classes.isna().to_numpy()):
        near = lookup.get(raw.iat[i].lower().replace(" ", "").replace("_", ""))
        hint = f"did you mean {near!r}? " if near else ""
        header = "the file has no header row; delete this line. " if i == 0 and not near else ""
        problems.append(
            Problem(
                "unknown-label",
                where[i],
                f"class {raw.iat[i]!r} is not one of {', '.join(CLASS_STRINGS)} (exact spelling); "
                "the row is left out",
                f"{hint}{header}correct the class string".strip(),
            )
        )
    return classes.fillna(-1).astype("int64").to_numpy(), problems


def _prefix_problems(names: pd.Series, labels: np.ndarray, where: list[str]) -> list[Problem]:
    """A problem per row (N,) whose n/b/is/iv file-name prefix disagrees with its class."""
    problems = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        if label < 0:
            continue
        match = _PREFIX.match(name)
        if match is None:
            problems.append(
                Problem(
                    "bad-name",
                    where[i],
                    "file name does not start with n, b, is or iv and a number (e.g. b001.tif)",
                )
            )
        elif PREFIXES[match[1].lower()] != label:
            said = CLASS_STRINGS[PREFIXES[match[1].lower()]]
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"file name says {said} but the CSV says {CLASS_STRINGS[label]}; the CSV's "
                    f"class is used (and its folder, {CLASS_STRINGS[label]}/)",
                    "check which of the two is right",
                )
            )
    return problems


def read_bach(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of ``microscopy_ground_truth.csv`` in file order; see the module docstring."""
    photos = _photos_dir(root)
    frame = _read_ground_truth(photos / CSV_NAME)
    names = frame.iloc[:, 0].astype(str).str.strip()
    raw = frame.iloc[:, 1].astype(str).str.strip()
    where = [f"{CSV_NAME} row {i + 1} ({name})" for i, name in enumerate(names)]
    classes, problems = _class_problems(raw, where)
    duplicate, repeats = first_listing_only(names, where)
    problems.extend(repeats)
    problems.extend(_prefix_problems(names, classes, where))
    folders = np.array((*CLASS_STRINGS, ""), dtype=object)[classes]
    table = pd.DataFrame(
        {
            "path": f"{PHOTOS_DIR}/" + folders + "/" + names,
            "label": classes,
            "patient": "",
            **original_columns(len(frame)),
        }
    )
    kept = (classes >= 0) & ~duplicate
    problems.extend(
        Problem(
            "empty-class",
            f"{PHOTOS_DIR}/{CLASS_STRINGS[c]}/",
            f"no image of class {CLASS_NAMES[c]} (no {CSV_NAME} row says {CLASS_STRINGS[c]})",
            "restore the class's images and their rows",
        )
        for c in range(len(CLASS_NAMES))
        if not (classes[kept] == c).any()
    )
    return SourceTable(table.loc[kept], problems)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="bach",
        source_url="https://iciar2018-challenge.grand-challenge.org/",
        title="BACH (ICIAR 2018 breast cancer histology)",
        aliases=("iciar2018", "iciar-2018", "bach2018", "iciar2018_bach"),
        folder="bach",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_bach,
        description="400 H&E breast histology microscopy images (2048x1536 RGB TIFF), 100 "
        "each normal, benign, in situ and invasive carcinoma.",
    ),
)
