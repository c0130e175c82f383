"""Synthetic CIFAR-10 / CIFAR-100 batches in torchvision's "python version" layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.data.sources.cifar import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR100,
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    IMAGE_SIDE,
    ROW_LENGTH,
    CifarLayout,
)
from medtransfer.data.synth.primitives import SynthOptions, class_pattern
from medtransfer.data.synth.py2_pickle import py2_pickle
from medtransfer.fsutil import atomic_write_bytes


def _synth_assignment(
    rng: np.random.Generator, per_class: int, n_classes: int, n_train_files: int
) -> list[list[int]]:
    """Labels per file (train files first, then the test file), classes spread over them.

    Each class puts about a sixth of its images (at least one when it has two or more) in the
    test file and deals the rest over the train files; every file is then shuffled.
    """
    files: list[list[int]] = [[] for _ in range(n_train_files + 1)]
    n_test = max(1, per_class // 6) if per_class >= 2 else 0
    for label in range(n_classes):
        files[-1].extend([label] * n_test)
        for j in range(per_class - n_test):
            files[(j + label) % n_train_files].append(label)
    return [list(rng.permutation(np.asarray(labels, dtype=np.int64))) for labels in files]


def _synth_batch(
    rng: np.random.Generator,
    labels: list[int],
    layout: CifarLayout,
    batch_label: str,
    serial: list[int],
) -> dict[str, Any]:
    n_classes = len(layout.class_names)
    rows = np.zeros((len(labels), ROW_LENGTH), dtype=np.uint8)
    names = []
    for i, label in enumerate(labels):
        image = class_pattern(rng, IMAGE_SIDE, int(label), n_classes)  # (32, 32, 3) in [0, 1]
        pixels = np.round(image * 255).astype(np.uint8)
        rows[i] = pixels.transpose(2, 0, 1).reshape(-1)  # HWC -> R, G, B planes
        serial[0] += 1
        names.append(f"{layout.class_names[label]}_s_{serial[0]:06d}.png")
    entry: dict[str, Any] = {"batch_label": batch_label, "data": rows}
    int_labels = [int(x) for x in labels]
    if layout is CIFAR100:
        coarse = {n: c for c, (_, fine) in enumerate(CIFAR100_SUPERCLASSES) for n in fine}
        entry["fine_labels"] = int_labels
        entry["coarse_labels"] = [coarse[layout.class_names[x]] for x in int_labels]
    else:
        entry["labels"] = int_labels
    entry["filenames"] = names
    return entry


def _synth_meta(layout: CifarLayout, per_batch: int) -> dict[str, Any]:
    if layout is CIFAR100:
        return {
            "fine_label_names": list(CIFAR100_CLASSES),
            "coarse_label_names": [name for name, _ in CIFAR100_SUPERCLASSES],
        }
    return {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}


def synth_cifar(root: Path, options: SynthOptions, layout: CifarLayout) -> None:
    """Write ``layout`` under ``root``: the exact Python 2 pickle format, 32x32 images.

    ``options.per_class`` images per class spread over the train files and the test file;
    ``options.size`` is ignored (the format fixes 32x32). Each class has its own stripe
    pattern and tint (:func:`medtransfer.data.synth.primitives.class_pattern`).
    """
    rng = np.random.default_rng(options.seed)
    n_classes = len(layout.class_names)
    assignment = _synth_assignment(rng, options.per_class, n_classes, len(layout.train_files))
    serial = [0]
    for index, (file, labels) in enumerate(zip(layout.files, assignment, strict=True)):
        if file in layout.test_files:
            batch_label = "testing batch 1 of 1"
        else:
            batch_label = f"training batch {index + 1} of {len(layout.train_files)}"
        entry = _synth_batch(rng, labels, layout, batch_label, serial)
        atomic_write_bytes(root / layout.folder / file, py2_pickle(entry))
    per_batch = max(len(labels) for labels in assignment)
    meta = py2_pickle(_synth_meta(layout, per_batch))
    atomic_write_bytes(root / layout.folder / layout.meta_file, meta)


def synth_cifar10(root: Path, options: SynthOptions) -> None:
    """CIFAR-10 layout (``cifar-10-batches-py``); see :func:`synth_cifar`."""
    synth_cifar(root, options, CIFAR10)


def synth_cifar100(root: Path, options: SynthOptions) -> None:
    """CIFAR-100 layout (``cifar-100-python``); see :func:`synth_cifar`."""
    synth_cifar(root, options, CIFAR100)
