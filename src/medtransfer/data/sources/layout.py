"""One way to say that a dataset folder is not in its published layout, and how to fix it.

Every reader raises :func:`layout_error` when a file or folder of its layout is missing:
the message names what is missing and what was expected there, then the first
:class:`Clue` that applies (what exists instead, what is wrong with the tree, what to move
where), then the command that writes a small tree in the layout. :func:`one_level_too_deep`
finds the most common clue: the tree unpacked into one folder too many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtransfer.errors import DatasetError

TOO_DEEP = "the tree is nested one level too deep"
TOO_SHALLOW = "the tree is one level too shallow"


def synth_hint(dataset: str) -> str:
    """The sentence that points at ``medtransfer datasets synth`` for ``dataset``."""
    return f"Run `medtransfer datasets synth --dataset {dataset} --out DIR` to see the layout."


@dataclass(frozen=True)
class Clue:
    """Something on disk that explains a missing layout path.

    ``found``: where it is (None: this clue does not apply); ``wrong``: what is wrong with
    the tree; ``fix``: what to move, rename or extract where.
    """

    found: Path | None
    wrong: str
    fix: str

    def __str__(self) -> str:
        return f"{self.found} exists: {self.wrong}; {self.fix}."


def one_level_too_deep(root: Path, relative: str) -> Clue | None:
    """A clue when ``root/<extra>/<relative>`` exists (``relative`` may be a glob pattern).

    The fix names the extra folder whose contents belong in ``root``; the first match in
    sorted order is reported.
    """
    matches = sorted(root.glob(f"*/{relative}")) if root.is_dir() else []
    if not matches:
        return None
    extra = root / matches[0].relative_to(root).parts[0]
    return Clue(matches[0], TOO_DEEP, f"move the contents of {extra} up into {root}")


def layout_error(dataset: str, missing: Path, expected: str, *clues: Clue | None) -> DatasetError:
    """``<missing> not found: expected <expected>. [<first applicable clue>.] <synth hint>``.

    ``clues`` are tried in order; one whose ``found`` is None is skipped.
    """
    clue = next((c for c in clues if c is not None and c.found is not None), None)
    text = f"{missing} not found: expected {expected}."
    if clue is not None:
        text += f" {clue}"
    return DatasetError(f"{text} {synth_hint(dataset)}")
