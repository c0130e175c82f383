"""Faults, with real processes: ``kill -9`` of a worker in the middle of an extraction, of
the driver in the middle of a cell, and two drivers on one grid at once. Whatever is
killed, the survivors or the same command again complete the grid with every record
exactly once and every feature store whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from medtransfer.cli import main
from medtransfer.sweep.grid import load_grid
from tests.sweep.conftest import (
    TINY,
    check_feature_stores,
    records_by_cell,
    sweep_args,
    write_grid,
)

MORE_SEEDS = """\
  - protocol: few-shot
    models: [random_r18]
    datasets: [shenzhencxr, montgomerycxr]
    seeds: [2, 3]
    options: {n_way: 2, n_support: 2, n_query: 2, iter_num: 20}
"""


def driver(results: Path, cache: Path, grid: Path, out: IO[str], *extra: str) -> subprocess.Popen:
    """``medtransfer sweep`` in a process of its own."""
    command = [sys.executable, "-m", "medtransfer.cli", *sweep_args(results, cache, str(grid))]
    return subprocess.Popen([*command, *extra], stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def states(results: Path) -> list[dict[str, Any]]:
    found = []
    for path in (results / "sweeps" / "cells").glob("*/state"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):  # replaced while read: read it next time
            continue
    return found


def test_killed_workers_and_drivers_never_duplicate_or_damage(tmp_path: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    # larger crops, so that extraction lasts long enough to be caught in the act
    grid = write_grid(tmp_path, TINY.replace("image_size: 32", "image_size: 128"), "big.yaml")
    log = (tmp_path / "out.txt").open("w")

    # 1. kill -9 one of two workers while features are being extracted
    first = driver(results, cache, grid, log, "--jobs", "2")

    def extracting_worker() -> int | None:
        if not list((cache / "features").rglob("*.partial")):
            return None
        running = [s["pid"] for s in states(results) if s["state"] == "running"]
        return running[0] if running else None

    victim = wait_for(extracting_worker)
    assert victim != first.pid
    os.kill(victim, signal.SIGKILL)
    first.wait(timeout=300)
    log.flush()
    out = (tmp_path / "out.txt").read_text()
    assert any(f"worker {i} was killed by SIGKILL" in out for i in (0, 1))
    assert list((results / "sweeps").rglob("*.plan"))  # what the workers shared
    assert not list((results / "sweeps").rglob("*.json"))  # nothing that looks like a record
    # the other worker ran what the killed one left, or the same command does now
    assert main(sweep_args(results, cache, str(grid))) == 0
    big = load_grid(grid).cells
    assert records_by_cell(results) == {cell.key: 1 for cell in big}
    assert not list((cache / "features").rglob("*.partial"))
    assert check_feature_stores(cache) == 3  # few-shot x 2 datasets, kNN (another resize)

    # 2. more cells: kill -9 the driver (it runs its cells itself) in the middle of a cell
    grid = write_grid(tmp_path, TINY + MORE_SEEDS)
    cells = [*big, *load_grid(grid).cells]
    second = driver(results, cache, grid, log)
    wait_for(
        lambda: any(s["state"] == "running" and s["pid"] == second.pid for s in states(results))
    )
    os.kill(second.pid, signal.SIGKILL)
    assert second.wait(timeout=60) == -signal.SIGKILL
    assert any(s["state"] == "running" for s in states(results))  # it died mid-cell

    # 3. two drivers on the grid at once finish it between them
    third, fourth = (driver(results, cache, grid, log) for _ in range(2))
    assert third.wait(timeout=300) == 0 and fourth.wait(timeout=300) == 0
    log.close()
    assert records_by_cell(results) == {cell.key: 1 for cell in cells}
    assert all(s["state"] == "done" for s in states(results))
    assert main(sweep_args(results, cache, str(grid))) == 0  # nothing left to run
    assert records_by_cell(results) == {cell.key: 1 for cell in cells}
    assert check_feature_stores(cache) == 6
