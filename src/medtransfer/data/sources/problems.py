"""Problems about index-file rows, worded the same way by every reader that reports them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import Problem

#: Problems listed one by one per kind before a single "and N more" summary.
PROBLEM_LIMIT = 20


def row_problems(
    kind: str, file: str, rows: np.ndarray, detail: Callable[[int], str], fix: str = ""
) -> list[Problem]:
    """One problem per offending row (0-based data rows, (k,)), capped, then one summary.

    The CSV row number in ``file row N`` counts the header as row 1.
    """
    problems = [
        Problem(kind, f"{file} row {int(row) + 2}", detail(int(row)), fix)
        for row in rows[:PROBLEM_LIMIT]
    ]
    if len(rows) > PROBLEM_LIMIT:
        problems.append(
            Problem(kind, file, f"... and {len(rows) - PROBLEM_LIMIT} more rows like these", fix)
        )
    return problems


def listed_again(file: str, values: pd.Series, repeated: np.ndarray) -> list[Problem]:
    """A capped ``duplicate`` problem per ``repeated`` row, naming the row listed first.

    ``values``: (N,) the index column, indexed by 0-based data row; ``repeated``: (N,) bool.
    """
    if not repeated.any():
        return []
    firsts = values.drop_duplicates(keep="first")
    first_row = pd.Series(firsts.index.to_numpy(), index=firsts.to_numpy())
    return row_problems(
        "duplicate",
        file,
        np.flatnonzero(repeated),
        lambda r: (
            f"{values.iloc[r]} is listed again (first at row {first_row[values.iloc[r]] + 2})"
        ),
        "remove the repeated row",
    )


def first_listing_only(names: pd.Series, where: list[str]) -> tuple[np.ndarray, list[Problem]]:
    """Bool mask (N,) of repeated names (all but the first) and a ``duplicate`` problem each.

    ``where``: (N,) how each row is named in a problem (e.g. ``"<csv> row 3 (<name>)"``).
    """
    duplicate = names.duplicated(keep="first").to_numpy()
    problems = [
        Problem(
            "duplicate",
            where[i],
            "image listed more than once; only its first row is used",
            "remove the repeated row",
        )
        for i in np.flatnonzero(duplicate)
    ]
    return duplicate, problems
