"""What every dataset source returns, and the label options sources may take.

A *source* turns one folder in a dataset's published layout into a table with one row
per image. It reads index files and lists folders but never opens an image (that is
``datasets check``'s job).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ROW_COLUMNS = ("path", "label", "patient")
ORIGINAL_COLUMNS = ("original_split", "original_order")
#: The split a source gives each row itself (``train``/``val``/``test``; a ``csv:`` file's
#: ``split`` column): the manifest keeps it instead of splitting.
GIVEN_SPLIT = "given_split"
SPLITS = ("train", "val", "test")
UNCERTAIN_POLICIES = ("positive", "negative", "ignore")
PM_POSITIVE_POLICIES = ("P", "HP")


@dataclass(frozen=True)
class LabelOptions:
    """Label choices the original hid; each dataset uses the ones that concern it.

    ``uncertain``: CheXpert's uncertain (-1) labels become ``positive`` (U-Ones, the
    original's few-shot), ``negative`` (U-Zeros, what its linear and fine-tune runs did in
    effect) or ``ignore`` (the row is dropped). ``pm_positive``: iChallenge-PM positives,
    ``P`` (pathological myopia, the official PALM definition and the original's code) or
    ``HP`` (high and pathological myopia, the original's README).
    """

    uncertain: str = "positive"
    pm_positive: str = "P"

    def describe(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The options named in ``names`` (the ones a dataset uses), for records."""
        values = asdict(self)
        return {name: values[name] for name in names}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk.

    ``kind`` is a short tag (``missing-file``, ``unreadable-image``, ``unknown-label``,
    ``label-mismatch``, ``duplicate``, ``empty-class``, ``layout``, ...), ``file`` the file
    (and row) at fault, ``detail`` what is wrong and ``fix`` what the user can do about it.
    """

    kind: str
    file: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.file}: {self.detail}"
        return f"{text} — {self.fix}" if self.fix else text

    @classmethod
    def from_error(
        cls, kind: str, file: str, error: BaseException, fix: str = "", *, named: str = ""
    ) -> Problem:
        """The problem an error reports about ``file``, each part said once.

        An :class:`~medtransfer.errors.ImageDecodeError` built with its parts gives its
        detail and fix; any other message loses a leading ``"<named or file>: "`` (the
        problem names the file in front), and its own advice (a last ``"; <advice>"``
        clause) becomes the fix; ``fix`` is used only when the message advises nothing.
        """
        detail = getattr(error, "detail", None)
        if detail is not None:
            return cls(kind, file, detail, getattr(error, "fix", None) or fix)
        text = str(error).strip()
        for prefix in (named, file):
            if prefix and text.startswith(f"{prefix}: "):
                text = text[len(prefix) + 2 :]
        text = text.rstrip(".")
        head, sep, tail = text.rpartition("; ")
        if sep and _advises(tail):
            return cls(kind, file, head, tail)
        return cls(kind, file, text, "" if _advises(text) else fix)


def _advises(text: str) -> bool:
    """Whether a message already tells the user what to do."""
    return any(word in text for word in ("re-download", "remove", "restore", "fix ", "check "))


@dataclass
class SourceTable:
    """Rows read from a published layout.

    ``table`` has the columns ``path`` (posix path relative to the dataset folder; a
    source with its own loader may address an item inside a file as ``file#key``),
    ``label`` (int class index), ``patient`` (str, "" when unknown), in the order of the
    source's index file. Optionally, ``original_split`` (``train``/``test``) and
    ``original_order`` (int: the row's position in the original's iteration order within
    its split) where the original's split is not the generic one (:func:`generic_original`),
    and ``given_split`` (``train``/``val``/``test``) where the source fixes the split itself.
    ``notes``: what the source decided that a record should say (e.g. which column the
    class names came from); the manifest adds them to its params.
    """

    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in ROW_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"source table lacks columns {missing}")
        optional = (*ORIGINAL_COLUMNS, GIVEN_SPLIT)
        keep = [*ROW_COLUMNS, *(c for c in optional if c in self.table.columns)]
        self.table = self.table.loc[:, keep].reset_index(drop=True)
        self.table["label"] = self.table["label"].astype("int64")
        self.table["patient"] = self.table["patient"].fillna("").astype(str)
        self.table["path"] = self.table["path"].astype(str)

    @property
    def has_original_split(self) -> bool:
        return all(c in self.table.columns for c in ORIGINAL_COLUMNS)


def generic_original(
    n_rows: int, *, seed: int = 42, train_fraction: float = 0.8, n_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The original's usual split of an index file with ``n_rows`` rows.

    ``DataFrame.sample(frac=1, random_state=seed)`` over all rows; the first ``n_train``
    shuffled rows (default ``floor(train_fraction * n_rows)``) are train, the rest test.
    Returns (split name per row, position within its split in shuffled order), both (n_rows,).
    """
    order = pd.RangeIndex(n_rows).to_series().sample(frac=1, random_state=seed).to_numpy()
    cut = math.floor(train_fraction * n_rows) if n_train is None else min(n_train, n_rows)
    split = np.empty(n_rows, dtype=object)
    position = np.empty(n_rows, dtype=np.int64)
    split[order[:cut]] = "train"
    split[order[cut:]] = "test"
    position[order[:cut]] = np.arange(cut)
    position[order[cut:]] = np.arange(n_rows - cut)
    return split, position


def original_columns(n_rows: int, *, n_train: int | None = None) -> dict[str, np.ndarray]:
    """:func:`generic_original` over all ``n_rows`` index rows, as the two row columns.

    ``original_split`` and ``original_order``, (n_rows,) each, computed before any row is
    dropped: a dropped row leaves the other rows the split the original gave them.
    """
    split, position = generic_original(n_rows, n_train=n_train)
    return {"original_split": split, "original_order": position}


def renumber_original_order(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``original_order`` renumbered 0.. within each ``original_split``.

    For a source whose original iterates only the rows kept after a filter: the kept rows
    keep their shuffled order, without the gaps the dropped rows left.
    """
    rank = table.groupby("original_split")["original_order"].rank(method="first")
    return table.assign(original_order=rank.astype(np.int64) - 1)
