"""Fixtures the reader tests share: a synthetic tree, its manifest, the original's split."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.manifest import Manifest, build_manifest
from medtransfer.data.spec import DatasetSpec, ResolvedDataset
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import WRITERS


@pytest.fixture
def synth_tree() -> Callable[..., Path]:
    """``write(spec, parent, per_class=3, size=24, seed=0)``: the tree at ``parent/<folder>``."""

    def write(
        spec: DatasetSpec, parent: Path, *, per_class: int = 3, size: int = 24, seed: int = 0
    ) -> Path:
        root = parent / spec.folder
        WRITERS[spec.name](root, SynthOptions(per_class=per_class, size=size, seed=seed))
        return root

    return write


@pytest.fixture
def manifest_of() -> Callable[..., Manifest]:
    """``build(spec, root, **kwargs)``: :func:`build_manifest` of ``spec`` read from ``root``."""

    def build(spec: DatasetSpec, root: Path, **kwargs: object) -> Manifest:
        return build_manifest(ResolvedDataset(spec, root), **kwargs)

    return build


@pytest.fixture
def original_split() -> Callable[[list[str]], dict[str, str]]:
    """``split(rows)``: the original's generic split of index rows, computed as its code does.

    ``sample(frac=1, random_state=42)`` over the rows, the first ``floor(0.8 N)`` train, the
    rest test; then ``np.random.seed(0)`` shuffles the train positions and the first
    ``floor(0.2 N_train)`` become val (docs/original-study.md#splits). Row -> split name.
    """

    def split(rows: list[str]) -> dict[str, str]:
        frame = pd.DataFrame({"row": rows}).sample(frac=1, random_state=42)
        frame = frame.reset_index(drop=True)
        n_train = math.floor(0.8 * len(frame))
        names = {row: "train" for row in frame["row"][:n_train]}
        names.update({row: "test" for row in frame["row"][n_train:]})
        indices = list(range(n_train))
        np.random.seed(0)
        np.random.shuffle(indices)
        for i in indices[: math.floor(0.2 * n_train)]:
            names[frame["row"][i]] = "val"
        return names

    return split
