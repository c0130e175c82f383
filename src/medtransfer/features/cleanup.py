"""Clean-up of what dead runs leave in a store folder (``<cache>/features/<model>/<dataset>/``).

Removed, never while a live process holds the key's lock: temporary build, creation and
deletion folders (``.<key16>….tmp``); partial stores whose complete store exists; partial
stores of the same recipe as the store being extracted but another key (the dataset's rows
or files changed since: they can never be resumed); partial stores untouched for
:data:`PARTIAL_MAX_AGE_DAYS` days; lock files without a partial store.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from medtransfer.features.complete import is_complete
from medtransfer.features.locks import try_exclusive
from medtransfer.features.partial import LAYOUT_VERSION, read_layout, remove_folder

#: Partial stores of other keys untouched for this long are deleted by the next extraction.
PARTIAL_MAX_AGE_DAYS = 30

_ENTRY = re.compile(r"^\.?([0-9a-f]{16})(\.partial|\.lock)?(\..*\.tmp)?$")


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [p.stat().st_mtime for p in folder.iterdir() if p.exists()]
    return max(times)


def clean_leftovers(store_root: Path, *, keep: str, recipe: dict[str, Any]) -> list[Path]:
    """Delete what dead runs left in ``store_root`` (module docstring): never anything
    whose key's lock a live process holds, nor the partial store of the key ``keep``.
    ``recipe``: :func:`feature_recipe` of ``keep``. Returns the paths deleted."""
    root = Path(store_root)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    for entry in sorted(root.iterdir()):
        match = _ENTRY.match(entry.name)
        if match is None:
            continue
        key16, kind, tmp = match[1], match[2], match[3]
        partial = root / f"{key16}.partial"
        if tmp is not None:
            candidate = True  # a build, creation or deletion folder of a dead process
        elif kind == ".partial":
            candidate = key16 != keep[:16] and _obsolete(entry, key16, recipe)
        elif kind == ".lock":
            candidate = not partial.exists()
        else:
            continue  # a complete store
        if not candidate:
            continue
        with try_exclusive(root / f"{key16}.lock") as free:
            if free is None or not entry.exists():
                continue
            if entry.is_dir():
                remove_folder(entry)
            free.release(delete=not partial.exists())
            removed.append(entry)
    return removed


def _obsolete(folder: Path, key16: str, recipe: dict[str, Any]) -> bool:
    """Whether a partial store (of another key) can go: its complete store exists, its
    layout is unreadable or old, the same recipe now has another key (the data changed), or
    it has not been touched for :data:`PARTIAL_MAX_AGE_DAYS` days."""
    if is_complete(folder.with_name(key16)):
        return True
    info = read_layout(folder)
    if info is None or info.get("version") != LAYOUT_VERSION or info.get("recipe") == recipe:
        return True
    try:
        age = time.time() - _newest_mtime(folder)
    except FileNotFoundError:
        return False
    return age > PARTIAL_MAX_AGE_DAYS * 86400
