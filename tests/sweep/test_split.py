"""Extraction split into parts (``split_extraction``): three part tasks run at once on local
workers and the cells that read their store wait for them (a free worker too), a part
killed with ``kill -9`` mid-extraction is finished by the same command run again, the
merged store is the bits of one extraction, and the cells read it without a forward pass
of their own."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.features import extraction
from medtransfer.features.layout import Part
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.locks import is_held
from medtransfer.sweep.state import cell_files, read_state
from medtransfer.sweep.synthetic import synthetic_root
from tests.support.threads import one_thread  # noqa: F401  (autouse: the workers' arithmetic)
from tests.sweep.conftest import records_by_cell, sweep_args, write_grid
from tests.sweep.test_faults import wait_for

#: One store (few-shot resizes the shorter side here, as kNN does) of 16 images in 8
#: shards of 2 rows, split into 3 parts: shards 0-1, 2-4 and 5-7.
SPLIT = """\
name: split
synthetic: {per_class: 8, size: 32}
defaults: {device: cpu, precision: fp32, image_size: 32, batch_size: 2}
split_extraction: {min_images: 10, parts: 3}
grid:
  - protocol: few-shot
    models: [random_r18]
    datasets: [shenzhencxr]
    options: {n_way: 2, n_support: 2, n_query: 2, iter_num: 20, resize: shorter}
  - protocol: knn
    models: [random_r18]
    datasets: [shenzhencxr]
    options: {ks: [3], bootstrap: 20}
"""
#: ``features extract`` flags naming the same store (the workers run with OMP_NUM_THREADS=1,
#: this module with one thread: the same arithmetic, for bitwise comparisons).
FLAGS = ["-d", "shenzhencxr", "-m", "random_r18", "--for", "few-shot", "--no-progress"] + [
    f"--{flag}={value}"
    for flag, value in {
        "image-size": 32,
        "batch-size": 2,
        "device": "cpu",
        "precision": "fp32",
        "resize": "shorter",
    }.items()
]
CTX = multiprocessing.get_context("fork")


def _hold_first_shards(data: Path, cache: Path, ready: Path) -> None:
    """A process that claims the first shard of each of the 3 parts of the store and keeps
    them until it is killed: every part task then extracts the rest of its part and waits."""

    def claim_and_wait(forward: Any, partial: Any, claims: Any, *_: Any) -> int:
        for index in (1, 2, 3):
            assert claims.claim(partial.layout.part(Part(index, 3))[0])
        ready.write_text("claimed")
        time.sleep(600)
        return 0

    extraction._one_pass = claim_and_wait  # this process only (forked)
    roots = ["--data-root", str(data), "--cache-dir", str(cache)]
    main([*roots, "features", "extract", *FLAGS, "--part", "1/3"])
    os._exit(1)


def _logs(results: Path, keys: list[str]) -> list[str]:
    texts = []
    for key in keys:
        log = cell_files(results, key).log
        texts.append(log.read_text() if log.is_file() else "")
    return texts


def _part_states(results: Path) -> list[tuple[str, dict[str, Any]]] | None:
    """(key, state) of the 3 parts in part order, once each has a state."""
    found = []
    for path in (results / "sweeps" / "cells").glob("*/state"):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if state.get("protocol") == "features":
            found.append((path.parent.name, state))
    return sorted(found, key=lambda item: item[1]["label"]) if len(found) == 3 else None


def _check_the_store(
    results: Path, cells: Sequence[Cell], store: Path, data: Path, alone: Path
) -> None:
    """Every cell has one record and read ``store`` without a forward pass; ``store`` holds
    the bits of one extraction of ``data`` without parts (made now, into the cache
    ``alone``)."""
    assert records_by_cell(results) == {cell.key: 1 for cell in cells}
    for cell in cells:
        state = read_state(cell_files(results, cell.key))
        record = json.loads((results / state["record"]).read_text())
        assert record["features_extracted"] is False
        assert record["feature_key"][:16] == store.name
    roots = ["--data-root", str(data), "--cache-dir", str(alone)]
    assert main([*roots, "features", "extract", *FLAGS]) == 0
    (single,) = (alone / "features" / "random_r18" / "shenzhencxr").iterdir()
    assert single.name == store.name
    merged = np.load(store / "features.npy")
    assert merged.shape == (16, 512)
    assert merged.tobytes() == np.load(single / "features.npy").tobytes()


def test_parts_run_at_once_before_the_cells_and_a_killed_part_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    grid = write_grid(tmp_path, SPLIT, "split.yaml")
    cells = load_grid(grid).cells

    # the dry run sizes the dataset (writing the synthetic tree) and lists the parts
    assert main(sweep_args(results, cache, str(grid), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("features part") == 3 and "(16 images)" in out
    assert "3 extraction parts (3 pending); 2 would run and 3 extraction part(s) before them" in out
    assert not results.exists()
    data = synthetic_root(cache, load_grid(grid).synthetic)
    assert f"Data root: {data}" in out

    holder = CTX.Process(target=_hold_first_shards, args=(data, cache, tmp_path / "ready"))
    holder.start()
    wait_for(lambda: (tmp_path / "ready").is_file(), timeout=60)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "medtransfer.cli", *sweep_args(results, cache, str(grid))]
    with (tmp_path / "out.txt").open("w") as log:
        # three workers for the parts, and a fourth that must not start the cells before them
        driver = subprocess.Popen([*command, "--jobs", "4"], stdout=log, stderr=log, env=env)
        try:
            keys = [key for key, _ in wait_for(lambda: _part_states(results))]
            # every part extracted the rest of its part and waits for its first shard
            wait_for(lambda: all("waiting for 1 shard(s)" in t for t in _logs(results, keys)))
            states = [read_state(cell_files(results, key)) for key in keys]
            assert all(s["state"] == "running" for s in states)
            assert len({s["pid"] for s in states}) == 3  # three workers at once
            wait_for(lambda: "is running elsewhere" in (tmp_path / "out.txt").read_text())
            assert all(read_state(cell_files(results, c.key)) is None for c in cells)  # waiting
            os.kill(states[1]["pid"], signal.SIGKILL)  # a part, mid-extraction
            os.kill(driver.pid, signal.SIGKILL)  # and the sweep (its workers go with it)
            assert driver.wait(timeout=60) == -signal.SIGKILL
            # every worker is gone (each held a lock) before the claims are let go
            locks = list((results / "sweeps").rglob("*lock"))
            wait_for(lambda: not any(is_held(path) for path in locks), timeout=60)
        finally:
            holder.kill()
            holder.join(30)

    # the same command again finishes the parts from their saved shards, then the cells
    assert main(sweep_args(results, cache, str(grid))) == 0
    assert "2 cells: 2 done; 3 extraction parts: 3 done." in capsys.readouterr().out
    for key, text in zip(keys, _logs(results, keys), strict=True):
        state = read_state(cell_files(results, key))
        # 2 attempts, or 3 when the killed part's lock passed to the cells' worker (which
        # waits on it) in the moment before the driver's kill took that worker down too
        assert state["state"] == "done" and state["record"] is None and state["attempts"] in (2, 3)
        last = text.rsplit(f"attempt {state['attempts']} of", 1)[-1]
        assert "already there" in last  # the finishing attempt resumed saved shards
    (store,) = {read_state(cell_files(results, key))["store"] for key in keys}
    _check_the_store(results, cells, Path(store), data, tmp_path / "alone")

    # nothing left to run; status lists the parts with their store
    capsys.readouterr()
    assert main(sweep_args(results, cache, str(grid))) == 0
    done = "split: nothing to run; 2 cells: 2 done; 3 extraction parts: 3 done."
    assert done in capsys.readouterr().out
    assert main(sweep_args(results, cache, "status", str(grid))) == 0
    out = capsys.readouterr().out
    assert all(f"{key[:8]}  done" in out for key in keys) and out.count(store) == 3


def test_parts_run_as_submitit_tasks_before_the_unit_that_reads_their_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tasks' arithmetic, as this process's
    results, cache = tmp_path / "results", tmp_path / "cache"
    grid = write_grid(tmp_path, SPLIT, "split.yaml")
    cells = load_grid(grid).cells
    args = sweep_args(results, cache, str(grid), "--executor", "submitit-local", "--jobs", "3")
    assert main(args) == 0
    assert "split: 2 cells: 2 done; 3 extraction parts: 3 done." in capsys.readouterr().out
    parts = [state for _, state in _part_states(results) or []]
    assert len({state["pid"] for state in parts}) == 3  # a task each
    assert all(s["executor"] == "submitit-local" and s["record"] is None for s in parts)
    assert sum(s["merged"] for s in parts) == 1  # the last to finish completed the store
    for cell in cells:  # the unit ran its cells once every part had ended
        started = read_state(cell_files(results, cell.key))["started"]
        assert started > max(part["finished"] for part in parts)
    (store,) = {state["store"] for state in parts}
    data = synthetic_root(cache, load_grid(grid).synthetic)
    _check_the_store(results, cells, Path(store), data, tmp_path / "alone")
    assert main(args) == 0
    assert "nothing to run" in capsys.readouterr().out
