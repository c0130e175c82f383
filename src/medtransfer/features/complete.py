"""A complete store, ``<key16>/``: read back, checked, and written in one rename.

``features.npy``  float32 (N, D), read back memory-mapped
``rows.csv``      the manifest rows the features belong to, in the same order
``meta.json``     the key's ingredients, ``shape`` [N, D], the shard layout, timings

A complete store is only ever made by renaming a finished temporary folder
(:func:`medtransfer.fsutil.atomic_directory`), so a crash never leaves one that looks
complete. One whose features are not the float32 array of the shape its ``meta.json``
records (or whose files are missing or unreadable) is damaged: :func:`open_complete` raises
and the store extracts it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.features.partial import Coverage, PartialStore
from medtransfer.fsutil import atomic_directory, atomic_write_json


def open_complete(folder: Path) -> np.ndarray:
    """The features (N, D) float32, memory-mapped, of the complete store in ``folder``.

    Raises:
        FileNotFoundError: no complete store there.
        ValueError: the store is damaged (its features are not what meta.json records).
    """
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
        features = np.load(folder / "features.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"unreadable ({exc})") from exc
    if list(features.shape) != meta.get("shape") or features.dtype != np.float32:
        raise ValueError(
            f"features.npy holds {features.dtype} {list(features.shape)}, meta.json records "
            f"float32 {meta.get('shape')}"
        )
    if not (folder / "rows.csv").is_file():
        raise ValueError("rows.csv is missing")
    return features


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a complete, undamaged store."""
    try:
        open_complete(folder)
    except (FileNotFoundError, ValueError):
        return False
    return True


def write_complete(
    final: Path,
    partial: PartialStore,
    coverage: Coverage,
    rows: pd.DataFrame,
    meta: dict[str, Any],
) -> None:
    """Write the complete store ``final`` from the chunks of ``coverage`` (every shard of
    ``partial``), the manifest ``rows`` and ``meta``, under a temporary name, then renamed."""
    n_rows, dim = partial.layout.n_rows, coverage.dim or 0
    with atomic_directory(final) as tmp:
        out = np.lib.format.open_memmap(
            tmp / "features.npy", mode="w+", dtype=np.float32, shape=(n_rows, dim)
        )
        for chunk, block in partial.read(coverage):
            out[chunk.start : chunk.stop] = block
        out.flush()
        del out
        rows.to_csv(tmp / "rows.csv", index=False)
        atomic_write_json(tmp / "meta.json", {**meta, "shape": [n_rows, dim]})
