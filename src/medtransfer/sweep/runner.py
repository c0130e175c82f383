"""Running cells: the part every executor shares (a local worker process, a Slurm array
task, submitit's local executor).

A cell runs only while its process holds the cell's lock; under the lock it reads the
cell's state again (another process may have finished it meanwhile), marks it running,
runs the job with everything it prints going to the cell's log, and marks it done (with
its record) or failed (with the error). The job's record is tagged with the cell key and
the attempt id (:func:`medtransfer.results.records.record_context`), which is what makes a
kill at any moment safe: see :mod:`medtransfer.sweep.state`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medtransfer.config import Roots
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.locks import Lock
from medtransfer.sweep.order import Unit
from medtransfer.sweep.state import (
    DONE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    cell_files,
    read_state,
    reconcile,
    sweep_dir,
    tagged_records,
    write_state,
)

#: Values a sweep gives output-only options its grid leaves unset (no progress bars in logs).
RUN_DEFAULTS: dict[str, Any] = {"progress": False}


@dataclass(frozen=True)
class RunContext:
    """One invocation of ``medtransfer sweep``: where it works (``roots``; the data root
    may be the grid's synthetic trees), its ``run_id``, the grid's name and file, the
    executor, and whether done cells (``force``) or failed ones (``rerun_failed``) run
    again."""

    roots: Roots
    run_id: str
    grid: str
    grid_file: str
    executor: str
    force: bool = False
    rerun_failed: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["roots"] = {k: str(v) for k, v in asdict(self.roots).items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunContext:
        roots = Roots(**{k: Path(v) for k, v in data["roots"].items()})
        return cls(**{**data, "roots": roots})

    @property
    def folder(self) -> Path:
        return sweep_dir(self.roots.results, self.grid)


def wants_run(ctx: RunContext, state: dict[str, Any] | None, results: Path) -> bool:
    """Whether a cell in ``state`` runs in this invocation: never started or interrupted:
    yes; finished in this invocation already: no; done: with ``force`` (or when its record
    is gone); failed: with ``rerun_failed`` or ``force``."""
    if state is None or state["state"] in (INTERRUPTED, RUNNING):
        return True
    if state.get("run") == ctx.run_id:
        return False
    if state["state"] == DONE:
        return ctx.force or not (results / state["record"]).is_file()
    return ctx.rerun_failed or ctx.force


def adopt_records(results: Path, cells: list[Cell]) -> int:
    """Give cells that have no state but a tagged record (their ``sweeps/`` folder was
    deleted, or copied without it) a done state pointing to their newest record; returns
    how many. Reads every record under ``results`` once, and only when a cell lacks a
    state."""
    missing = [c for c in cells if read_state(cell_files(results, c.key)) is None]
    if not missing:
        return 0
    index = tagged_records(results)
    adopted = 0
    for cell in missing:
        if cell.key not in index:
            continue
        files = cell_files(results, cell.key)
        with Lock(files.lock) as lock:
            if lock.try_acquire() and read_state(files) is None:
                record = index[cell.key][-1]
                write_state(
                    files,
                    {
                        "state": DONE,
                        "run": "adopted",
                        "record": str(record.relative_to(results)),
                        "label": cell.label,
                        "finished": time.time(),
                    },
                )
                adopted += 1
    return adopted


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's output to ``path``, appended, inside the block: file
    descriptors 1 and 2 (output of native code and child processes too) and Python's
    ``sys.stdout``/``sys.stderr`` (whatever they were replaced with)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    stream = open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        stream.close()
        for handle in (fd, *saved):
            os.close(handle)


def retry_command(ctx: RunContext, cell: Cell) -> str:
    """The command that runs ``cell`` again, alone."""
    roots = ctx.roots
    return (
        f"medtransfer --data-root {roots.data} --cache-dir {roots.cache} --results-dir "
        f"{roots.results} sweep {ctx.grid_file} --only {cell.short} --rerun-failed"
    )


def run_cell(ctx: RunContext, cell: Cell, *, say: Callable[[str], None] = print) -> str:
    """Run ``cell`` unless another process has finished it (or it failed before and
    ``rerun_failed`` is off); returns its state afterwards (``done``, ``failed``) or
    ``skipped``. Waits while another process runs it."""
    results = ctx.roots.results
    files = cell_files(results, cell.key)
    with Lock(files.lock) as lock:
        lock.acquire(on_wait=lambda: say(f"waiting: {cell.label} is running elsewhere"))
        state = reconcile(results, cell.key)
        if not wants_run(ctx, state, results):
            return "skipped"
        attempt = uuid.uuid4().hex
        started = time.time()
        base = {
            "label": cell.label,
            "protocol": cell.protocol,
            "where": cell.where,
            "run": ctx.run_id,
            "attempt": attempt,
            "attempts": (state or {}).get("attempts", 0) + 1,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "executor": ctx.executor,
            "started": started,
        }
        write_state(files, {**base, "state": RUNNING})
        with _output_to(files.log):
            header = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
            print(
                f"==== {header} attempt {base['attempts']} of {cell.label} ({attempt}) on "
                f"{base['host']} pid {base['pid']}, sweep {ctx.grid}, run {ctx.run_id}"
            )
            try:
                record = _run_job(ctx, cell, attempt)
            except Exception as exc:  # the cell failed; the sweep goes on
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                write_state(
                    files, {**base, "state": FAILED, "error": error, "finished": time.time()}
                )
                print(f"==== failed: {error}")
                return FAILED
            print(f"==== done: {record}")
        relative = str(record.relative_to(results))
        write_state(files, {**base, "state": DONE, "record": relative, "finished": time.time()})
        return DONE


def _run_job(ctx: RunContext, cell: Cell, attempt: str) -> Path:
    from medtransfer.jobs.registry import get_job
    from medtransfer.results.records import record_context

    job = get_job(cell.protocol)
    options = cell.options(RUN_DEFAULTS)
    tag = {"grid": ctx.grid, "cell": cell.key, "attempt": attempt}
    with record_context(sweep=tag):
        result = job.run(ctx.roots, *options)
    for line in result.lines:
        print(line)
    return result.record_path


def run_unit(
    ctx: RunContext, unit: Unit, *, say: Callable[[str], None] = print
) -> list[tuple[str, str]]:
    """Run the cells of ``unit`` in order; (cell key, state afterwards) per cell."""
    outcomes = []
    for cell in unit.cells:
        outcome = run_cell(ctx, cell, say=say)
        if outcome != "skipped":
            where = cell_files(ctx.roots.results, cell.key).log
            say(f"{outcome}: {cell.label} ({cell.short}; log {where})")
        outcomes.append((cell.key, outcome))
    return outcomes
