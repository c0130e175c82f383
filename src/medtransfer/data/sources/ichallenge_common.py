"""What the iChallenge-AMD and iChallenge-PM readers share: JPEG listing and optional CSVs.

Both releases are folders of JPEGs; the original also read a custom CSV for each, which is
optional here. These helpers list the images, read such a CSV and report its row-level
problems the same way for both datasets.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.data.sources.base import Problem
from medtransfer.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg")


def list_images(folder: Path) -> list[str]:
    """Sorted names of the JPEG files directly in ``folder`` (none if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_index_csv(csv_path: Path, min_columns: int, expected: str) -> pd.DataFrame:
    """A header-row CSV as strings, N rows; :class:`DatasetError` if unreadable or too narrow."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < min_columns:
        raise DatasetError(
            f"{csv_path}: expected at least {min_columns} columns ({expected}, used by "
            f"position after a header row), found {list(frame.columns)}."
        )
    return frame


def row_names(csv_name: str, names: pd.Series) -> list[str]:
    """``"<csv> row <n> (<name>)"`` per row (the header is row 1), for problems; (N,)."""
    return [f"{csv_name} row {i + 2} ({name})" for i, name in enumerate(names)]


def unlisted_problems(
    folder: str, files: list[str], listed: set[str], csv_name: str
) -> list[Problem]:
    """A problem for each image in ``folder`` that the CSV does not list."""
    return [
        Problem(
            "unlisted",
            f"{folder}/{name}",
            f"image on disk but not listed in {csv_name}; it is not used",
            f"add it to {csv_name}, or remove {csv_name} to use every image in the folders",
        )
        for name in files
        if name not in listed
    ]
