"""Running cells and extraction parts: the part every executor shares (a local worker
process, a Slurm array task, submitit's local executor).

A task (a cell, or an extraction part: :mod:`medtransfer.sweep.parts`) runs only while
its process holds the task's lock; under the lock it reads the task's state again (another
process may have finished it meanwhile), marks it running, runs it with everything it
prints going to the task's log, and marks it done (a cell with its record, a part with its
store) or failed (with the error). A job's record is tagged with the cell key and the
attempt id (:func:`medtransfer.results.records.record_context`), which is what makes a
kill at any moment safe: see :mod:`medtransfer.sweep.state`. A part writes no record; one
killed mid-way is interrupted, and its next run resumes the store's saved shards.
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
from medtransfer.sweep.parts import PartTask, extract_part_now
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
    """Whether a task in ``state`` runs in this invocation: never started or interrupted:
    yes; finished in this invocation already: no; done: with ``force`` (or when its record
    is gone; a task without a record, an extraction part, is done by its state alone);
    failed: with ``rerun_failed`` or ``force``."""
    if state is None or state["state"] in (INTERRUPTED, RUNNING):
        return True
    if state.get("run") == ctx.run_id:
        return False
    if state["state"] == DONE:
        record = state.get("record")
        return ctx.force or (record is not None and not (results / record).is_file())
    return ctx.rerun_failed or ctx.force


def adopt_records(results: Path, cells: list[Cell]) -> int:
    """Give cells that have no state but a tagged record (their ``sweeps/`` folder was
    deleted, or copied without it) a done state pointing to their newest record; returns
    how many. Reads every record under ``results`` once, and only when a cell lacks a
    state. Extraction parts write no record, so there is nothing to adopt for them: a part
    without a state is pending, and runs again (it finds its store complete, or resumes
    it)."""
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
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


def retry_command(ctx: RunContext, task: Cell | PartTask) -> str:
    """The command that runs ``task`` (a cell or an extraction part) again, alone."""
    roots = ctx.roots
    return (
        f"medtransfer --data-root {roots.data} --cache-dir {roots.cache} --results-dir "
        f"{roots.results} sweep {ctx.grid_file} --only {task.short} --rerun-failed"
    )


#: What a task's body returns: the keys its done state gains (``record``, relative to the
#: results root, or None; a part's ``store``, ...).
Body = Callable[[str], dict[str, Any]]


def run_cell(ctx: RunContext, cell: Cell, *, say: Callable[[str], None] = print) -> str:
    """Run ``cell`` unless another process has finished it (or it failed before and
    ``rerun_failed`` is off); returns its state afterwards (``done``, ``failed``) or
    ``skipped``. Waits while another process runs it."""
    info = {"label": cell.label, "protocol": cell.protocol, "where": cell.where}
    return _run_task(ctx, cell.key, info, lambda attempt: _run_job(ctx, cell, attempt), say=say)


def run_part(
    ctx: RunContext, part: PartTask, *, say: Callable[[str], None] = print, wait: bool = True
) -> str:
    """Run the extraction ``part`` as :func:`run_cell` runs a cell (it writes no record);
    with ``wait`` False, return ``held`` at once when another process is running it."""
    info = {"label": part.label, "protocol": "features", "where": part.where}

    def body(attempt: str) -> dict[str, Any]:
        outcome = extract_part_now(ctx.roots, part, part.cell.options(RUN_DEFAULTS))
        return {"record": None, **outcome}

    return _run_task(ctx, part.key, info, body, say=say, wait=wait, records=False)


def _run_task(
    ctx: RunContext,
    key: str,
    info: dict[str, Any],
    body: Body,
    *,
    say: Callable[[str], None],
    wait: bool = True,
    records: bool = True,
) -> str:
    """Run the task ``key`` (``info``: its label, protocol and grid line) under its lock
    (module docstring); ``records``: whether it writes a record (a killed attempt's is
    looked for)."""
    results = ctx.roots.results
    files = cell_files(results, key)
    label = info["label"]
    with Lock(files.lock) as lock:
        if not wait and not lock.try_acquire():
            return "held"
        lock.acquire(on_wait=lambda: say(f"waiting: {label} is running elsewhere"))
        state = reconcile(results, key, records=records)
        if not wants_run(ctx, state, results):
            return "skipped"
        attempt = uuid.uuid4().hex
        started = time.time()
        base = {
            **info,
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
                f"==== {header} attempt {base['attempts']} of {label} ({attempt}) on "
                f"{base['host']} pid {base['pid']}, sweep {ctx.grid}, run {ctx.run_id}"
            )
            try:
                outcome = body(attempt)
            except Exception as exc:  # the task failed; the sweep goes on
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                write_state(
                    files, {**base, "state": FAILED, "error": error, "finished": time.time()}
                )
                print(f"==== failed: {error}")
                return FAILED
            print(f"==== done: {outcome.get('record') or outcome.get('store')}")
        write_state(files, {**base, "state": DONE, **outcome, "finished": time.time()})
        return DONE


def _run_job(ctx: RunContext, cell: Cell, attempt: str) -> dict[str, Any]:
    from medtransfer.jobs.registry import get_job
    from medtransfer.results.records import record_context

    job = get_job(cell.protocol)
    options = cell.options(RUN_DEFAULTS)
    tag = {"grid": ctx.grid, "cell": cell.key, "attempt": attempt}
    with record_context(sweep=tag):
        result = job.run(ctx.roots, *options)
    for line in result.lines:
        print(line)
    return {"record": str(result.record_path.relative_to(ctx.roots.results))}


def run_unit(
    ctx: RunContext, unit: Unit, *, say: Callable[[str], None] = print
) -> list[tuple[str, str]]:
    """Run the extraction parts ``unit`` waits for (or wait while others run them), then
    its cells in order; (task key, state afterwards) per part and cell."""
    outcomes = []
    for task in (*unit.parts, *unit.cells):
        if isinstance(task, PartTask):
            outcome = run_part(ctx, task, say=say)
        else:
            outcome = run_cell(ctx, task, say=say)
        if outcome != "skipped":
            where = cell_files(ctx.roots.results, task.key).log
            say(f"{outcome}: {task.label} ({task.short}; log {where})")
        outcomes.append((task.key, outcome))
    return outcomes
