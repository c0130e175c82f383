"""The arrays sidecar of a record (``<run_id>.npz`` beside ``<run_id>.json``): what a paired
comparison of two records needs, kept compact.

Two layouts, by what the protocol scores:

* **episodes** (few-shot): ``episode_accuracy`` (R, E) float32, the accuracy (fraction) of
  every episode of each of R episode seeds; ``episode_seeds`` (R,) int64; and
  ``episodes_sha256`` (R,) str, a digest of the episodes' class and image indices, so two
  records are known to have scored the *same* episodes.
* **test rows** (linear, kNN): ``test_rows`` (M,) int64, the manifest row index of every
  test row (the record's ``manifest_hash`` says which manifest); ``y_true`` (M,) int64;
  ``scores`` (R, M, K) float32, the class scores of each of R runs (linear: one per
  validation draw; kNN: one per k), with K the number of classes of the dataset (columns
  are class indices); ``runs`` (R,) int64, what tells the runs apart (the validation seed,
  -1 for the default draw; or k).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def sidecar_path(record_path: Path) -> Path:
    """The arrays sidecar of a record: ``<run_id>.npz`` beside ``<run_id>.json``."""
    return Path(record_path).with_suffix(".npz")


def episodes_digest(classes: np.ndarray, support: np.ndarray, query: np.ndarray) -> str:
    """sha256 of an episode set's index arrays: ``classes`` (E, W), ``support`` (E, W, S),
    ``query`` (E, W, Q)."""
    digest = hashlib.sha256()
    for array in (classes, support, query):
        array = np.ascontiguousarray(array, dtype=np.int64)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def episode_arrays(
    seeds: Sequence[int], accuracies: Sequence[np.ndarray], digests: Sequence[str]
) -> dict[str, np.ndarray]:
    """The few-shot sidecar: per-seed episode ``accuracies`` (each (E,), fractions), their
    ``seeds`` and the :func:`episodes_digest` of each seed's episodes."""
    return {
        "episode_accuracy": np.stack([np.asarray(a, dtype=np.float32) for a in accuracies]),
        "episode_seeds": np.asarray(seeds, dtype=np.int64),
        "episodes_sha256": np.asarray(list(digests), dtype=str),
    }


def row_arrays(
    rows: np.ndarray,
    y_true: np.ndarray,
    scores: Sequence[np.ndarray],
    runs: Sequence[int],
    n_classes: int,
    classes: Sequence[np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """The linear/kNN sidecar: test ``rows`` (M,) manifest indices, ``y_true`` (M,), and one
    score matrix (M, K_r) per run; ``classes[r]`` (K_r,) labels run r's columns (default
    0..K_r-1). Scores are spread onto all ``n_classes`` columns (a class a run never saw
    scores 0)."""
    full = np.zeros((len(scores), len(rows), n_classes), dtype=np.float32)
    for r, matrix in enumerate(scores):
        matrix = np.asarray(matrix, dtype=np.float32)
        columns = (
            np.arange(matrix.shape[1])
            if classes is None or classes[r] is None
            else np.asarray(classes[r], dtype=np.int64)
        )
        full[r][:, columns] = matrix
    return {
        "test_rows": np.asarray(rows, dtype=np.int64),
        "y_true": np.asarray(y_true, dtype=np.int64),
        "scores": full,
        "runs": np.asarray(runs, dtype=np.int64),
    }


def load_sidecar(record_path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of the record at ``record_path``, or None when it has no readable sidecar."""
    path = sidecar_path(record_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
