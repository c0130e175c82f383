"""Manifests: one table per (dataset, split and label policies) that every protocol reads.

A manifest has one row per image with the columns ``path`` (posix, relative to the
dataset folder), ``label`` (int), ``class_name``, ``patient`` and ``split`` (``train``,
``val`` or ``test``). It is deterministic, content-hashed (the hash covers rows, class
names and every policy) and kept in the cache as CSV beside a JSON of its parameters.

Split policies
--------------
``original``
    The original study's split, row for row: the source's own rule where it has one
    (CheXpert's cut at row 134049, EyePACS's official split, ChestX's split before
    filtering), otherwise ``DataFrame.sample(frac=1, random_state=42)`` over the whole index
    file with the first ``floor(0.8 N)`` rows as train. The validation hold-out is the
    original's too: ``np.random.seed(0)``, shuffle the train positions, first
    ``floor(0.2 N_train)`` are val.
``patient`` (default)
    Every patient's images stay on one side of every cut. Patients are shuffled with the seed
    inside each class (a patient's class is its most frequent label) and taken into test
    until the class's test share reaches ``test_fraction`` of its images; the validation
    hold-out is cut from train the same way. Where the data has no patient ids, each image is
    its own patient (``datasets list`` says which datasets have them).
``given`` (recorded, not a flag)
    A source that fixes the split itself (a ``csv:`` file with a ``split`` column, e.g. one
    ``datasets export`` wrote) keeps it row for row; when it has no ``val`` row (or the
    linear probe re-draws val with ``val_seed``), val is cut from train by the patient rule.
    ``--split-policy original`` is then an error.

An empty class (no row) is an error unless ``empty_classes="drop"`` leaves it out
(``--drop-empty-classes``, recorded in the params and so in the hash).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.data.catalog import ResolvedDataset, dataset_key
from medtransfer.data.images import load_image
from medtransfer.data.sources.base import GIVEN_SPLIT, LabelOptions, Problem, generic_original
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_json, atomic_write_text, sha256_json

SPLIT_POLICIES = ("patient", "original")
#: What a manifest does with a class that has no image: raise (every job), leave it out
#: (``--drop-empty-classes``) or keep it, with no row, for ``datasets check`` to report.
EMPTY_CLASS_POLICIES = ("error", "drop", "keep")
MANIFEST_COLUMNS = ("path", "label", "class_name", "patient", "split")
MANIFEST_VERSION = 2


@dataclass(frozen=True)
class Manifest:
    """The rows of one dataset under one split policy.

    ``table``: DataFrame with :data:`MANIFEST_COLUMNS`, N rows; ``root``: the dataset folder
    the paths are relative to; ``hash``: sha256 over rows, class names and ``params``.
    """

    dataset: str
    root: Path
    class_names: tuple[str, ...]
    table: pd.DataFrame
    params: dict[str, Any]
    hash: str
    problems: tuple[Problem, ...] = field(default=(), compare=False)
    loader: Callable[[Path], Image.Image] = field(default=load_image, compare=False)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def rows_hash(self) -> str:
        """sha256 of the dataset name and the items in row order (not labels or splits)."""
        return sha256_json({"dataset": self.dataset, "items": self.table["path"].tolist()})

    @property
    def labels(self) -> np.ndarray:
        """Class index per row, shape (N,), int64."""
        return self.table["label"].to_numpy(dtype=np.int64)

    def absolute_paths(self) -> list[Path]:
        """Absolute item path per row, in row order (what :attr:`loader` takes)."""
        return [self.root / p for p in self.table["path"]]

    def files(self) -> list[Path]:
        """The file behind each row (an item ``file#key`` inside a file maps to ``file``)."""
        return [self.root / p.split("#", 1)[0] for p in self.table["path"]]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of a split, shape (n,) int64; empty when the manifest has no such split
        (no ``val`` with ``--val-fraction 0``). :meth:`select` raises instead."""
        return np.flatnonzero(self.table["split"].to_numpy() == split).astype(np.int64)

    def select(self, split: str) -> np.ndarray:
        """Row indices of a split (``train``, ``test``) or of every row (``all``), shape (n,)."""
        if split == "all":
            return np.arange(len(self.table))
        if split not in set(self.table["split"]):
            raise DatasetError(
                f"{self.dataset}: split {split!r} has no rows; splits present: "
                f"{sorted(set(self.table['split']))}."
            )
        return self.rows(split)


def original_split(n_rows: int, seed: int = 42, train_fraction: float = 0.8) -> np.ndarray:
    """The original's generic split: split name per source row, shape (n_rows,).

    Row order after ``DataFrame.sample(frac=1, random_state=seed)``; the first
    ``floor(train_fraction * n_rows)`` shuffled rows are train, the rest test.
    """
    return generic_original(n_rows, seed=seed, train_fraction=train_fraction)[0]


def original_validation(n_train: int, val_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """The original's validation hold-out: a bool per train position (original order), (n_train,).

    ``np.random.seed(0); np.random.shuffle(indices)``; the first ``floor(0.2 n_train)``
    shuffled positions are val (docs/original-study.md#splits). ``seed`` other than 0
    draws another hold-out the same way (``--seeds`` of the linear probe).
    """
    positions = np.arange(n_train)
    np.random.RandomState(seed).shuffle(positions)
    is_val = np.zeros(n_train, dtype=bool)
    is_val[positions[: math.floor(val_fraction * n_train)]] = True
    return is_val


def patient_split(
    labels: np.ndarray, patients: np.ndarray, seed: int = 0, test_fraction: float = 0.2
) -> np.ndarray:
    """A patient-grouped, class-stratified split: split name per row, shape (N,).

    ``labels``: (N,) int; ``patients``: (N,) str, "" meaning "unknown" (the row is then its
    own patient). No patient ever has rows on both sides.
    """
    n = len(labels)
    groups = np.where(patients == "", np.char.add("row:", np.arange(n).astype(str)), patients)
    codes, _ = pd.factorize(groups, sort=True)  # group index per row, groups in sorted order
    n_groups = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=n_groups)
    per_label = np.zeros((n_groups, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(per_label, (codes, labels), 1)
    majority = per_label.argmax(axis=1)  # a patient's class: its most frequent label
    rng = np.random.default_rng(seed)
    in_test = np.zeros(n_groups, dtype=bool)
    for label in np.unique(majority):
        members = np.flatnonzero(majority == label)
        if len(members) < 2:
            continue  # a class with one patient cannot be on both sides; it stays in train
        perm = rng.permutation(len(members))
        cumulative = np.cumsum(sizes[members[perm]])
        target = test_fraction * cumulative[-1]
        n_test = int(np.searchsorted(cumulative, target, side="left")) + 1
        n_test = min(max(n_test, 1), len(members) - 1)
        in_test[members[perm[:n_test]]] = True
    return np.where(in_test[codes], "test", "train").astype(object)


def build_manifest(
    dataset: ResolvedDataset,
    *,
    split_policy: str = "patient",
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    labels: LabelOptions | None = None,
    val_seed: int | None = None,
    empty_classes: str = "error",
) -> Manifest:
    """Read ``dataset`` from its published layout and split it; opens no image.

    ``test_fraction`` and ``seed`` apply to the ``patient`` policy; ``val_fraction`` is the
    share of train held out for validation under both policies (0 for none). ``val_seed``
    re-draws only the validation hold-out (default: the original's 0 under ``original``,
    ``seed + 1`` under ``patient``); the test split stays as it is. ``empty_classes``
    (:data:`EMPTY_CLASS_POLICIES`): a class without images is an error naming where its
    images should be (``error``), is left out and the others renumbered (``drop``; the
    manifest's params name it), or stays without rows (``keep``, for ``datasets check``).
    """
    if split_policy not in SPLIT_POLICIES:
        raise DatasetError(
            f"Unknown split policy {split_policy!r}; choose one of {', '.join(SPLIT_POLICIES)}."
        )
    if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1:
        raise DatasetError("--val-fraction must be in [0, 1) and the test fraction in (0, 1).")
    spec = dataset.spec
    labels = labels or LabelOptions()
    if not dataset.root.is_dir():
        raise DatasetError(
            f"{spec.name}: folder {dataset.root} not found. Put the dataset there in its published "
            f"layout, or point --data-root (MEDTRANSFER_DATA) at the folder that holds "
            f"'{spec.folder or dataset.root.name}'."
        )
    source = spec.read(dataset.root, labels)
    table = source.table.copy()
    if table.empty:
        raise DatasetError(f"{spec.name}: no images listed under {dataset.root}.")
    label_values = table["label"].to_numpy(dtype=np.int64)
    if label_values.min() < 0 or label_values.max() >= len(spec.class_names):
        raise DatasetError(f"{spec.name}: labels outside 0..{len(spec.class_names) - 1}.")
    class_names, label_values, dropped = _empty_classes(
        dataset, label_values, source.problems, empty_classes
    )
    table["label"] = label_values
    params: dict[str, Any] = {
        "split_policy": split_policy,
        "label_policy": labels.describe(spec.label_options) if spec.label_options else "original",
        "val_fraction": val_fraction,
        "drop_empty_classes": empty_classes == "drop",
    }
    if dropped:
        params["dropped_classes"] = list(dropped)
    if val_seed is not None:
        params["val_seed"] = val_seed
    params.update(source.notes)
    patients = table["patient"].to_numpy(dtype=str)
    if GIVEN_SPLIT in table.columns:
        if split_policy == "original":
            raise DatasetError(
                f"{spec.name}: {source.notes.get('split_from', 'the source')} fixes the split, "
                "so --split-policy original does not apply; leave the flag out (or delete the "
                "column to let a split policy split the data)."
            )
        split = table[GIVEN_SPLIT].to_numpy(dtype=object).copy()
        params["split_policy"] = "given"
        if val_seed is not None:  # re-draw val from the given train and val rows
            split[split == "val"] = "train"
        if not (split == "val").any():
            _hold_out_val(split, label_values, patients, val_fraction, seed + 1, val_seed)
    elif split_policy == "original":
        if spec.check_original is not None:
            spec.check_original(dataset.root)
        if source.has_original_split:
            split = table["original_split"].to_numpy(dtype=object).copy()
            order = table["original_order"].to_numpy(dtype=np.int64)
        else:
            split, order = generic_original(len(table))
        train_rows = np.flatnonzero(split == "train")
        train_rows = train_rows[np.argsort(order[train_rows], kind="stable")]
        held_out = original_validation(len(train_rows), val_fraction, seed=val_seed or 0)
        split[train_rows[held_out]] = "val"
        params["split_rule"] = "original"
    else:
        split = patient_split(label_values, patients, seed=seed, test_fraction=test_fraction)
        _hold_out_val(split, label_values, patients, val_fraction, seed + 1, val_seed)
        params.update(split_seed=seed, test_fraction=test_fraction, patient_ids=bool(spec.patients))
    table["split"] = split
    table["class_name"] = [class_names[i] for i in label_values]
    table = table.loc[:, list(MANIFEST_COLUMNS)]
    digest = sha256_json(
        {
            "version": MANIFEST_VERSION,
            "dataset": spec.name,
            "class_names": list(class_names),
            "params": params,
            "rows": table.to_csv(index=False),
        }
    )
    return Manifest(
        dataset=spec.name,
        root=dataset.root,
        class_names=class_names,
        table=table,
        params=params,
        hash=digest,
        problems=tuple(source.problems),
        loader=spec.load,
    )


def _hold_out_val(
    split: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    val_fraction: float,
    default_seed: int,
    val_seed: int | None,
) -> None:
    """Mark ``val_fraction`` of the ``train`` rows of ``split`` (N,) as ``val``, in place,
    by the patient rule (seed ``val_seed``, else ``default_seed``)."""
    train_rows = np.flatnonzero(split == "train")
    if val_fraction <= 0 or len(train_rows) < 2:
        return
    inner = patient_split(
        labels[train_rows],
        patients[train_rows],
        seed=default_seed if val_seed is None else val_seed,
        test_fraction=val_fraction,
    )
    split[train_rows[inner == "test"]] = "val"


def _empty_classes(
    dataset: ResolvedDataset, labels: np.ndarray, problems: list[Problem], policy: str
) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(class names, labels (N,), dropped class names) under the empty-class ``policy``."""
    if policy not in EMPTY_CLASS_POLICIES:
        raise ValueError(f"empty_classes must be one of {EMPTY_CLASS_POLICIES}, not {policy!r}")
    names = dataset.spec.class_names
    counts = np.bincount(labels, minlength=len(names))
    empty = tuple(names[i] for i in np.flatnonzero(counts == 0))
    if not empty or policy == "keep":
        return names, labels, ()
    if policy == "error":
        raise DatasetError(empty_class_message(dataset, empty, problems))
    kept = np.flatnonzero(counts > 0)
    renumber = np.full(len(names), -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    return tuple(names[i] for i in kept), renumber[labels], empty


def empty_class_message(
    dataset: ResolvedDataset, empty: tuple[str, ...], problems: list[Problem]
) -> str:
    """Why a dataset with the classes ``empty`` (no image each) cannot be used, where the
    images were looked for (the source's own ``empty-class`` problems name the folder or
    file), and the two ways out."""
    spec = dataset.spec
    listed = ", ".join(repr(name) for name in empty)
    where = [f"{p.file}: {p.detail}" for p in problems if p.kind == "empty-class"]
    found = "; ".join(where) if where else f"none found under {dataset.root}"
    return (
        f"{spec.name}: class {listed} has no image ({found}). Every class needs images: "
        "put them in place, or pass --drop-empty-classes to leave the empty class out (the "
        "manifest and the record then name it). `medtransfer datasets check` lists every "
        "problem of the dataset."
    )


def save_manifest(manifest: Manifest, cache_root: Path, dataset_dir: str) -> Path:
    """Keep the manifest in ``<cache>/manifests/<dataset>/<hash16>.csv`` (+ ``.json``)."""
    folder = cache_root / "manifests" / dataset_dir
    csv_path = folder / f"{manifest.hash[:16]}.csv"
    if not csv_path.exists():
        atomic_write_json(
            csv_path.with_suffix(".json"),
            {
                "dataset": manifest.dataset,
                "root": str(manifest.root),
                "class_names": list(manifest.class_names),
                "params": manifest.params,
                "hash": manifest.hash,
                "rows": len(manifest),
            },
        )
        atomic_write_text(csv_path, manifest.table.to_csv(index=False))
    return csv_path


def load_manifest(dataset: ResolvedDataset, cache_root: Path, **policies: Any) -> Manifest:
    """Build the manifest of ``dataset`` and keep a copy in the cache."""
    manifest = build_manifest(dataset, **policies)
    save_manifest(manifest, cache_root, dataset_key(dataset.spec))
    return manifest


def split_counts(manifest: Manifest) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    counts = pd.crosstab(
        manifest.table["class_name"], manifest.table["split"], margins=True, margins_name="total"
    )
    order = [c for c in ("train", "val", "test", "total") if c in counts.columns]
    return counts.loc[:, order]
