"""A local worker process: ``python -m medtransfer.sweep.worker PLAN STAGE INDEX``.

Workers of one stage share the plan (JSON in ``<results>/sweeps/<grid>/runs/<run id>.plan``)
and divide its units between them by lock, with no coordinator: a first pass takes every unit
nobody holds (the extraction parts come first in a stage, one unit each, so N workers run N
parts at once; a unit whose parts others are still running is left for later); a second
pass waits for the units others hold, and for the parts of the units left, and runs
whatever they left (a worker that died leaves its unit's remaining cells, or its part, to
the others). A worker kills
itself when the driver that started it is gone, so ``kill -9`` of the driver stops the
whole sweep.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from medtransfer.sweep.locks import Lock, is_held
from medtransfer.sweep.order import Unit
from medtransfer.sweep.runner import RunContext, run_unit, wants_run
from medtransfer.sweep.state import cell_files, read_state


def unit_lock(ctx: RunContext, unit: Unit) -> Lock:
    """The lock a worker holds while it runs ``unit``."""
    return Lock(ctx.folder / "units" / f"{unit.key}.lock")


def _left(ctx: RunContext, unit: Unit) -> bool:
    results = ctx.roots.results
    tasks = unit.cells or unit.parts  # a unit of one part has no cells
    return any(wants_run(ctx, read_state(cell_files(results, task.key)), results) for task in tasks)


def _parts_running(ctx: RunContext, unit: Unit) -> bool:
    """Whether another process is running one of the parts ``unit``'s cells wait for."""
    results = ctx.roots.results
    return bool(unit.cells) and any(
        is_held(cell_files(results, part.key).lock) for part in unit.parts
    )


def work(ctx: RunContext, units: Sequence[Unit], say: Callable[[str], None] = print) -> None:
    """Run ``units`` together with any other workers of the same plan (module docstring)."""
    held_elsewhere = []
    for unit in units:
        with unit_lock(ctx, unit) as lock:
            if lock.try_acquire() and not _parts_running(ctx, unit):
                run_unit(ctx, unit, say=say)
            else:
                held_elsewhere.append(unit)
    # units of cells first: each runs (or waits for) its own parts; a part alone needs no
    # one to wait for it while it runs elsewhere
    for unit in sorted(held_elsewhere, key=lambda unit: not unit.cells):
        if _left(ctx, unit):
            with unit_lock(ctx, unit) as lock:
                lock.acquire()
                run_unit(ctx, unit, say=say)


def _die_with(parent: int) -> None:
    """Kill this process as soon as ``parent`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    plan, stage, index = argv if argv is not None else sys.argv[1:]
    _die_with(os.getppid())
    data = json.loads(Path(plan).read_text(encoding="utf-8"))
    ctx = RunContext.from_json(data["context"])
    units = [Unit.from_json(u) for u in data["units"] if u["stage"] == int(stage)]

    def say(line: str) -> None:
        print(f"[worker {index}] {line}", flush=True)

    work(ctx, units, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
