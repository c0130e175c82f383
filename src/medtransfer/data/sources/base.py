"""What every dataset source returns: rows in a table, plus the problems found on the way.

A *source* turns one folder in a dataset's published layout into a table with one row
per image. It never opens an image (that is ``datasets check``'s job), so building a
manifest stays fast even for hundreds of thousands of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

ROW_COLUMNS = ("path", "label", "patient")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk.

    ``kind`` is a short tag (``missing-file``, ``unreadable-image``, ``unknown-label``,
    ``label-mismatch``, ``duplicate``, ...), ``file`` the file (and row) at fault,
    ``detail`` what is wrong and ``fix`` what the user can do about it.
    """

    kind: str
    file: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.file}: {self.detail}"
        return f"{text} — {self.fix}" if self.fix else text


@dataclass
class SourceTable:
    """Rows read from a published layout.

    ``table`` has the columns ``path`` (posix path relative to the dataset folder),
    ``label`` (int class index), ``patient`` (str, or empty string when unknown), in the
    order of the source's index file (that order matters for the ``original`` split).
    """

    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in ROW_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"source table lacks columns {missing}")
        self.table = self.table.loc[:, list(ROW_COLUMNS)].reset_index(drop=True)
        self.table["label"] = self.table["label"].astype("int64")
        self.table["patient"] = self.table["patient"].fillna("").astype(str)
        self.table["path"] = self.table["path"].astype(str)
