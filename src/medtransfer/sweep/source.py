"""A YAML file read as plain Python values, with the line and column of every value, so a
grid's problems can be reported where they are written.

PyYAML composes the file into nodes (each with its start mark); the nodes are turned into
dicts, lists and scalars, and every value's position is kept under its path of keys and
indexes (``("grid", 0, "models", 3)``). Anchors and aliases work (an alias reports the
position of what it refers to); merge keys (``<<``) and repeated keys are refused.
Scientific numbers without a dot (``3e-5``), which YAML 1.1 reads as text, are numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medtransfer.errors import ConfigError

#: The keys and list indexes that lead from the document's root to a value.
KeyPath = tuple[str | int, ...]


class GridError(ConfigError):
    """A grid file that cannot run as written; the message lists every problem found."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` and ``3E5`` as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class Located:
    """The document's ``data`` and, per key path, the (line, column) where it is written."""

    file: Path
    data: Any
    positions: dict[KeyPath, tuple[int, int]]

    def where(self, path: KeyPath) -> str:
        """``FILE:LINE:COL`` of ``path`` (or of its nearest parent that has a position)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                line, column = self.positions[path[:end]]
                return f"{self.file}:{line}:{column}"
        return str(self.file)

    def line(self, path: KeyPath) -> int:
        """The line of ``path`` (0 when unknown), for sorting problems."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]][0]
        return 0


def load_located(path: Path) -> Located:
    """Read the YAML file ``path``.

    Raises:
        GridError: the file is missing, not YAML, uses merge keys or repeats a key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GridError(f"Cannot read the grid file {path}: {exc.strerror}.") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise GridError(f"{place}: not valid YAML: {problem}.") from None
    positions: dict[KeyPath, tuple[int, int]] = {}
    problems: list[str] = []
    data = _convert(node, (), positions, _Loader(""), path, problems) if node else None
    if problems:
        raise GridError("\n".join(problems))
    return Located(path, data, positions)


def _convert(
    node: yaml.Node,
    path: KeyPath,
    positions: dict[KeyPath, tuple[int, int]],
    loader: _Loader,
    file: Path,
    problems: list[str],
) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            place = f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(f"{place}: merge keys (<<) are not supported; write the keys out.")
                continue
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                problems.append(f"{place}: keys must be text, got {key!r}.")
                continue
            if key in out:
                problems.append(f"{place}: the key {key!r} is written twice.")
                continue
            out[key] = _convert(value_node, (*path, key), positions, loader, file, problems)
            positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, index), positions, loader, file, problems)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node)
