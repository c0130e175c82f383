"""What a sweep keeps on disk, under ``<results>/sweeps/``, and each cell's status.

``cells/<key16>/`` (one folder per cell key, shared by every grid that has the cell):

``lock``   held (``flock``) by the process running the cell
``state``  JSON, replaced atomically: ``state`` (``running``, ``done``, ``failed``,
           ``interrupted``), the ``run`` and ``attempt`` ids, ``host``, ``pid``, times,
           ``record`` (relative to the results root) or ``error``, ``label``
``log``    everything the cell printed, every attempt appended after a header line

Extraction parts (:mod:`medtransfer.sweep.parts`) are tasks too, with a folder of the same
kind named by their key; their ``done`` state has ``record: null`` and the ``store`` they
filled (they write no record).

``<grid name>/`` (one folder per grid): ``runs/<run id>.plan`` (JSON: the plan the local
workers read), ``units/<key>.lock`` (claimed by the worker running a unit) and
``submitit/`` (Slurm task logs and pickles).

A cell's record is the truth: the record carries ``sweep.cell`` (the cell key) and
``sweep.attempt``; the state file points to it. When a process dies between writing the
record and the state file, the next process that takes the cell's lock finds the record
by its attempt id (:func:`reconcile`), so a cell never gets a second record by accident.
No file under ``sweeps/`` ends in ``.json``, so tools that read every ``*.json`` record
under the results root do not mistake the sweep's files for records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.fsutil import atomic_write_json
from medtransfer.sweep.locks import is_held

SWEEPS = "sweeps"

DONE, RUNNING, FAILED, INTERRUPTED, PENDING = "done", "running", "failed", "interrupted", "pending"


def sweep_dir(results: Path, name: str) -> Path:
    """The folder of one grid's runs, unit locks and task logs."""
    return Path(results) / SWEEPS / name


@dataclass(frozen=True)
class CellFiles:
    """The files of one cell (module docstring)."""

    folder: Path

    @property
    def lock(self) -> Path:
        return self.folder / "lock"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def log(self) -> Path:
        return self.folder / "log"


def cell_files(results: Path, key: str) -> CellFiles:
    return CellFiles(Path(results) / SWEEPS / "cells" / key[:16])


def read_state(files: CellFiles) -> dict[str, Any] | None:
    """The cell's state, or None when it never started."""
    try:
        return json.loads(files.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_state(files: CellFiles, state: dict[str, Any]) -> None:
    atomic_write_json(files.state, state)


@dataclass(frozen=True)
class CellStatus:
    """A cell's status (done, running, failed, interrupted, pending), its last state and,
    when done, its record."""

    status: str
    state: dict[str, Any] | None
    record: Path | None


def cell_status(results: Path, key: str) -> CellStatus:
    """The status of the cell ``key`` as another process sees it (no lock taken)."""
    files = cell_files(results, key)
    state = read_state(files)
    if is_held(files.lock):
        return CellStatus(RUNNING, state, None)
    if state is None:
        return CellStatus(PENDING, None, None)
    if state["state"] == DONE:
        if state.get("record") is None:  # a task without a record: an extraction part
            return CellStatus(DONE, state, None)
        record = Path(results) / state["record"]
        return (
            CellStatus(DONE, state, record)
            if record.is_file()
            else CellStatus(PENDING, state, None)
        )
    if state["state"] == FAILED:
        return CellStatus(FAILED, state, None)
    return CellStatus(INTERRUPTED, state, None)  # "running" with nobody holding the lock


def reconcile(results: Path, key: str, *, records: bool = True) -> dict[str, Any] | None:
    """The state of the task ``key`` for the process that now holds its lock: an attempt
    left ``running`` died; if it wrote its record first, the cell is done (the state file
    says so from now on), otherwise it is ``interrupted``. ``records``: whether the task
    writes a record at all (an extraction part does not: its dead attempt is interrupted,
    and no record is looked for)."""
    files = cell_files(results, key)
    state = read_state(files)
    if state is None or state["state"] != RUNNING:
        return state
    record = find_record(results, state["attempt"]) if records else None
    if record is not None:
        state = {**state, "state": DONE, "record": str(record.relative_to(results))}
    else:
        state = {**state, "state": INTERRUPTED}
    write_state(files, {**state, "finished": time.time()})
    return state


def _record_files(results: Path) -> Iterator[Path]:
    """Every ``*.json`` under ``results`` outside ``sweeps/`` and hidden folders."""
    results = Path(results)
    for folder, dirs, files in os.walk(results):
        if Path(folder) == results:
            dirs[:] = [d for d in dirs if d != SWEEPS]
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(".json") and not name.startswith("."):
                yield Path(folder) / name


def _sweep_tag(path: Path, needle: str) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
        if needle not in text:
            return None
        tag = json.loads(text).get("sweep")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return tag if isinstance(tag, dict) else None


def find_record(results: Path, attempt: str) -> Path | None:
    """The record written by the attempt ``attempt`` (a sweep tags its records), if any."""
    for path in _record_files(results):
        tag = _sweep_tag(path, attempt)
        if tag is not None and tag.get("attempt") == attempt:
            return path
    return None


def tagged_records(results: Path) -> dict[str, list[Path]]:
    """Cell key -> the records tagged with it, oldest first (by name: time-stamped)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(_record_files(results), key=lambda p: p.name):
        tag = _sweep_tag(path, '"sweep"')
        if tag is not None and isinstance(tag.get("cell"), str):
            found.setdefault(tag["cell"], []).append(path)
    return found
