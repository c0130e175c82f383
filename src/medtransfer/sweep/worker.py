"""A local worker process: ``python -m medtransfer.sweep.worker PLAN STAGE INDEX``.

Workers of one stage share the plan (JSON in ``<results>/sweeps/<grid>/runs/<run id>.plan``)
and divide its units between them by lock, with no coordinator: a first pass takes every unit
nobody holds; a second pass waits for the units others hold and runs whatever they left
(a worker that died leaves its unit's remaining cells to the others). A worker kills
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

from medtransfer.sweep.locks import Lock
from medtransfer.sweep.order import Unit
from medtransfer.sweep.runner import RunContext, run_unit, wants_run
from medtransfer.sweep.state import cell_files, read_state


def unit_lock(ctx: RunContext, unit: Unit) -> Lock:
    """The lock a worker holds while it runs ``unit``."""
    return Lock(ctx.folder / "units" / f"{unit.key}.lock")


def _left(ctx: RunContext, unit: Unit) -> bool:
    results = ctx.roots.results
    return any(
        wants_run(ctx, read_state(cell_files(results, cell.key)), results) for cell in unit.cells
    )


def work(ctx: RunContext, units: Sequence[Unit], say: Callable[[str], None] = print) -> None:
    """Run ``units`` together with any other workers of the same plan (module docstring)."""
    held_elsewhere = []
    for unit in units:
        with unit_lock(ctx, unit) as lock:
            if lock.try_acquire():
                run_unit(ctx, unit, say=say)
            else:
                held_elsewhere.append(unit)
    for unit in held_elsewhere:
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
