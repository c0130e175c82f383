"""Cell states: a process killed between writing its record and its state leaves a cell
that is found done, not run twice; a cell held by a live process is running."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import pytest

from medtransfer.config import resolve_roots
from medtransfer.errors import ConfigError
from medtransfer.features.locks import FileLock
from medtransfer.results.records import record_context, write_record
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.locks import Lock, is_held
from medtransfer.sweep.runner import RunContext, run_cell, wants_run
from medtransfer.sweep.state import (
    DONE,
    INTERRUPTED,
    RUNNING,
    cell_files,
    cell_status,
    reconcile,
    write_state,
)
from tests.results.test_records import _record
from tests.sweep.conftest import write_grid


def context(results: Path, run_id: str = "now") -> RunContext:
    roots = resolve_roots(results.parent / "data", results.parent / "cache", results)
    return RunContext(roots, run_id, "tiny", "tiny.yaml", "local")


def test_a_record_written_just_before_a_kill_counts_as_done(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (cell,) = load_grid(
        write_grid(tmp_path, "grid: [{protocol: knn, models: random_r18, datasets: bach}]")
    ).cells
    files = cell_files(results, cell.key)
    # the attempt wrote its record, then died before its state said so
    with record_context(sweep={"grid": "tiny", "cell": cell.key, "attempt": "a1"}):
        record = write_record(results, _record(), [])
    write_state(files, {"state": RUNNING, "run": "before", "attempt": "a1", "attempts": 1})
    assert cell_status(results, cell.key).status == INTERRUPTED  # nobody holds its lock
    ctx = context(results)
    assert run_cell(ctx, cell) == "skipped"  # found by its attempt id, not run again
    status = cell_status(results, cell.key)
    assert status.status == DONE and status.record == record
    assert not wants_run(ctx, status.state, results)
    assert wants_run(replace(ctx, force=True), status.state, results)


def test_an_attempt_that_died_without_a_record_runs_again(tmp_path: Path) -> None:
    results = tmp_path / "results"
    key = "f" * 64
    write_state(cell_files(results, key), {"state": RUNNING, "attempt": "gone", "attempts": 1})
    state = reconcile(results, key)
    assert state["state"] == INTERRUPTED and wants_run(context(results), state, results)


def _hold(path: Path, ready: multiprocessing.Event, release: multiprocessing.Event) -> None:
    with Lock(path) as lock:
        assert lock.try_acquire()
        ready.set()
        release.wait(30)


def test_a_cell_whose_lock_another_process_holds_is_running(tmp_path: Path) -> None:
    results = tmp_path / "results"
    key = "e" * 64
    files = cell_files(results, key)
    write_state(files, {"state": RUNNING, "attempt": "live", "attempts": 1, "pid": 1})
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold, args=(files.lock, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert is_held(files.lock) and cell_status(results, key).status == RUNNING
        assert not Lock(files.lock).try_acquire()
    finally:
        release.set()
        holder.join(30)
    deadline = time.monotonic() + 10
    while is_held(files.lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cell_status(results, key).status == INTERRUPTED  # its holder is gone


def test_a_file_system_without_locks_is_named_with_where_to_move_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    path = tmp_path / "results" / "sweeps" / "cells" / "abcd" / "lock"
    with pytest.raises(ConfigError) as raised:
        Lock(path).try_acquire()
    message = str(raised.value)
    assert message.startswith(f"{path}: this file system refused a file lock (No locks available)")
    assert "sweeps need one" in message and "--results-dir" in message
    with pytest.raises(ConfigError, match="--cache-dir or MEDTRANSFER_CACHE"):
        FileLock(tmp_path / "store.lock").acquire(exclusive=True)
