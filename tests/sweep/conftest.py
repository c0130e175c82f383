"""Sweep tests share one cache (synthetic trees and features made once) and run tiny grids
of random_r18 at 32 px on the CPU; each test has its own results root."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

#: Four few-shot cells over two feature sets and one kNN cell.
TINY = """\
name: tiny
synthetic: {per_class: 8, size: 32}
defaults: {device: cpu, precision: fp32, image_size: 32, batch_size: 16}
grid:
  - protocol: few-shot
    models: [random_r18]
    datasets: [shenzhencxr, montgomerycxr]
    seeds: [0, 1]
    options: {n_way: 2, n_support: 2, n_query: 2, iter_num: 20}
  - protocol: knn
    models: [random_r18]
    datasets: [shenzhencxr]
    options: {ks: [3], bootstrap: 20}
"""
#: A cell that fails when it runs: 5-way episodes on a 2-class dataset.
FAILING = """\
  - protocol: few-shot
    models: [random_r18]
    datasets: [shenzhencxr]
    options: {n_way: 5, n_support: 2, n_query: 2, iter_num: 20}
"""


@pytest.fixture(scope="session")
def sweep_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep-cache")


def write_grid(folder: Path, text: str = TINY, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def sweep_args(results: Path, cache: Path, *args: str) -> list[str]:
    return ["--results-dir", str(results), "--cache-dir", str(cache), "sweep", *args]


def records_by_cell(results: Path) -> Counter[str]:
    """Cell key -> how many records carry it."""
    counts: Counter[str] = Counter()
    for path in results.rglob("*.json"):
        if "sweeps" not in path.relative_to(results).parts:
            counts[json.loads(path.read_text())["sweep"]["cell"]] += 1
    return counts


def check_feature_stores(cache: Path) -> int:
    """Every complete feature store under ``cache`` reads back with the shape it records;
    returns how many there are."""
    import numpy as np

    stores = [meta.parent for meta in (cache / "features").rglob("meta.json")]
    for store in stores:
        shape = json.loads((store / "meta.json").read_text())["shape"]
        assert list(np.load(store / "features.npy", mmap_mode="r").shape) == shape
    return len(stores)
