"""iChallenge-PM (PALM) fundus set from Baidu Research's iChallenge (``ichallenge_pm``).

Published layout (docs/original-study.md#dataset-ichallenge-pm)::

    <root>/PALM-Training400/PALM-Training400/H0001.jpg      the folder name twice
    <root>/PALM-Training400/fovea_location_csv.csv          optional, the original's custom CSV

The CSV is not part of the official download; the original needed it. Here it is
optional: without it the rows are the images found in the folder, in sorted file-name
order. With it, the CSV's rows and order are used (as the original did) and every
disagreement between the CSV, the folder and the file-name prefix is reported.

Labels come from the file-name prefix: ``N`` normal, ``H`` high myopia, ``P`` pathological
myopia. ``LabelOptions.pm_positive == "P"`` (default; the official PALM definition and what
the original's code did) makes only ``P`` positive; ``"HP"`` (the original's README) makes
``H`` and ``P`` positive. The set has no patient ids (one image per eye, no subject key in
the release).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    PM_POSITIVE_POLICIES,
    LabelOptions,
    Problem,
    SourceTable,
    original_columns,
)
from medtransfer.data.sources.ichallenge_common import (
    list_images,
    read_index_csv,
    row_names,
    unlisted_problems,
)
from medtransfer.data.sources.layout import TOO_DEEP, Clue, layout_error, one_level_too_deep
from medtransfer.data.sources.problems import first_listing_only
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError

DATASET = "ichallenge_pm"
PM_CLASS_NAMES = ("non_pm", "pm")
PM_OUTER = "PALM-Training400"
PM_IMAGES = f"{PM_OUTER}/{PM_OUTER}"
PM_CSV = f"{PM_OUTER}/fovea_location_csv.csv"
PM_PREFIXES = ("N", "H", "P")
PM_POSITIVES = {"P": frozenset("P"), "HP": frozenset("HP")}


def _pm_image_dir(root: Path) -> Path:
    """``<root>/PALM-Training400/PALM-Training400``, or :class:`DatasetError` on bad nesting."""
    folder = root / PM_IMAGES
    expected = f"the PALM training images as {PM_IMAGES}/H0001.jpg, N0001.jpg, P0001.jpg, ..."
    if folder.is_dir():
        if not list_images(folder) and (folder / PM_OUTER).is_dir():
            raise layout_error(
                DATASET,
                folder / "*.jpg",
                expected,
                Clue(
                    folder / PM_OUTER,
                    f"{TOO_DEEP} (the folder name three times)",
                    f"move its images up into {folder}",
                ),
            )
        return folder
    outer, flat = list_images(root / PM_OUTER), list_images(root)
    raise layout_error(
        DATASET,
        folder,
        expected,
        Clue(
            root / PM_OUTER / outer[0] if outer else None,
            "the official archive names the folder twice",
            f"move the images into {folder}/",
        ),
        Clue(
            root / flat[0] if flat else None,
            f"{root} holds images directly",
            f"move them into {folder}/ (the folder name twice, as in the official archive)",
        ),
        one_level_too_deep(root, PM_IMAGES),
    )


def _pm_positive(labels: LabelOptions | None) -> frozenset[str]:
    """The prefixes that are positive under the label options."""
    policy = (labels or LabelOptions()).pm_positive
    if policy not in PM_POSITIVES:
        raise DatasetError(
            f"Unknown iChallenge-PM positive rule {policy!r}; choose one of "
            f"{', '.join(PM_POSITIVE_POLICIES)} (--pm-positive)."
        )
    return PM_POSITIVES[policy]


def _pm_labels(
    names: pd.Series, positive: frozenset[str], where: list[str]
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Label per file name from its prefix (N,), a bool mask of known prefixes, problems."""
    prefix = names.str[:1].str.upper()
    known = prefix.isin(PM_PREFIXES).to_numpy()
    labels = prefix.isin(sorted(positive)).to_numpy().astype(np.int64)
    problems = [
        Problem(
            "unknown-label",
            where[i],
            "file name does not start with N (normal), H (high myopia) or P (pathological "
            "myopia), so it has no label; the image is left out",
            "rename the file with its PALM prefix",
        )
        for i in np.flatnonzero(~known)
    ]
    return labels, known, problems


def _pm_raw_problems(
    frame: pd.DataFrame, labels: np.ndarray, keep: np.ndarray, where: list[str], rule: str
) -> list[Problem]:
    """Rows (N,) whose raw label (column 4) disagrees with the prefix rule, or is unknown.

    The original's rule: raw 2 is positive, raw 0 and 1 negative.
    """
    if frame.shape[1] < 5:
        return []
    raw = frame.iloc[:, 4].astype(str).str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    problems = []
    for i in np.flatnonzero(keep):
        if numeric.iat[i] not in (0, 1, 2):
            problems.append(
                Problem(
                    "unknown-label",
                    where[i],
                    f"raw label {raw.iat[i]!r} (column 5) is not 0, 1 or 2; the file-name "
                    "prefix gives the label",
                )
            )
        elif int(numeric.iat[i] == 2) != labels[i]:
            other = "HP" if rule == "P" else "P"
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"raw label {raw.iat[i]} makes it {PM_CLASS_NAMES[int(numeric.iat[i] == 2)]} "
                    f"under the original's rule (2 positive), but its prefix makes it "
                    f"{PM_CLASS_NAMES[labels[i]]} under --pm-positive {rule}; the prefix is used",
                    f"if your CSV encodes the other rule, use --pm-positive {other}",
                )
            )
    return problems


def _pm_table(names: pd.Series, labels: np.ndarray, n_rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": f"{PM_IMAGES}/" + names,
            "label": labels,
            "patient": "",
            **original_columns(n_rows),
        }
    )


def read_ichallenge_pm(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """iChallenge-PM rows: the custom CSV's order if present, else sorted file names.

    The label comes from the file-name prefix under ``labels.pm_positive``.
    """
    positive = _pm_positive(labels)
    rule = "".join(p for p in "HP" if p in positive)
    image_dir = _pm_image_dir(root)
    files = list_images(image_dir)
    csv_path = root / PM_CSV
    if not csv_path.is_file():
        names = pd.Series(files, dtype=str)
        where = [f"{PM_IMAGES}/{name}" for name in files]
        values, known, problems = _pm_labels(names, positive, where)
        return SourceTable(_pm_table(names, values, len(files)).loc[known], problems)
    frame = read_index_csv(csv_path, 2, "ID, imgName, ... and the raw label in column 5")
    names = frame.iloc[:, 1].astype(str).str.strip()
    csv_name = Path(PM_CSV).name
    where = row_names(csv_name, names)
    values, known, problems = _pm_labels(names, positive, where)
    duplicate, duplicates = first_listing_only(names, where)
    problems.extend(duplicates)
    keep = known & ~duplicate
    problems.extend(_pm_raw_problems(frame, values, keep, where, rule))
    problems.extend(unlisted_problems(PM_IMAGES, files, set(names), csv_name))
    return SourceTable(_pm_table(names, values, len(frame)).loc[keep], problems)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="ichallenge_pm",
        source_url="https://palm.grand-challenge.org/",
        title="iChallenge-PM / PALM (pathological myopia)",
        aliases=("pm", "palm", "ichallenge-pm", "ichallengepm"),
        folder="ichallenge_pm",
        class_names=PM_CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_ichallenge_pm,
        label_options=("pm_positive",),
        description="400 fundus photographs of the PALM training set (161 N / 26 H / 213 P); "
        "label from the file-name prefix, P positive (--pm-positive HP: H and P).",
    ),
)
