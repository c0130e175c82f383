"""The local executor with ``--jobs N`` (N > 1): worker processes on this machine, one GPU
each when several are visible. (With one job the driver runs the cells itself, one after
another, through the same :func:`medtransfer.sweep.worker.work`.)

The driver writes the plan, starts N workers per stage (:mod:`medtransfer.sweep.worker`)
and waits for them; the workers share the units by lock. Every worker is a separate
process, so a cell that crashes its process (out of memory, a native fault) takes down
one worker, not the sweep: the others run what it left, and the failure is reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medtransfer.fsutil import atomic_write_json
from medtransfer.sweep.order import Unit
from medtransfer.sweep.runner import RunContext


def visible_gpus(jobs: int) -> list[str]:
    """The GPUs workers may be given: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU
    torch sees (asked only when several workers could use them)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    if jobs < 2:
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(index: int, jobs: int, gpus: Sequence[str]) -> dict[str, str]:
    """The environment of worker ``index`` of ``jobs``: one GPU (round robin) when there are
    several, and an equal share of the CPU threads when several workers share the CPU."""
    env = dict(os.environ)
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def write_plan(ctx: RunContext, units: Sequence[Unit]) -> Path:
    """Write the plan the workers read (the run's context and every unit); its path."""
    plan = ctx.folder / "runs" / f"{ctx.run_id}.plan"
    atomic_write_json(plan, {"context": ctx.to_json(), "units": [u.to_json() for u in units]})
    return plan


def run_local(
    ctx: RunContext,
    plan: Path,
    units: Sequence[Unit],
    jobs: int,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Run ``units`` (one stage of ``plan``) with up to ``jobs`` workers; the problems of
    workers that did not end normally (cells that failed are in their states, not here)."""
    stage = units[0].stage
    count = min(jobs, len(units))  # extraction parts are units of their own
    gpus = visible_gpus(count)
    if len(gpus) > 1:
        say(f"{count} workers on GPUs {', '.join(gpus)} (one each, round robin)")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "medtransfer.sweep.worker", str(plan), str(stage), str(i)],
            env=worker_env(i, count, gpus),
        )
        for i in range(count)
    ]
    try:
        codes = [worker.wait() for worker in workers]
    except KeyboardInterrupt:
        for worker in workers:  # they got the interrupt too; give them a moment
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
        raise
    return [f"worker {i} {_exit_text(code)}" for i, code in enumerate(codes) if code != 0]
