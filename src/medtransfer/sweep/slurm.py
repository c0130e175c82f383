"""The Slurm executor, through submitit; and submitit's local executor, which runs the same
submission, pickling and result collection as processes on this machine (to try a grid
before a cluster run, and for the tests).

Each unit is one task; the units of a stage that ask for the same resources are one job
array (``array_parallelism`` of them at once). A task is a submitit ``Checkpointable``:
when Slurm preempts it, or its time runs out, submitit requeues it, and the requeued task
runs what its unit has left (finished cells have their records; the interrupted one runs
again). Task logs (``<job id>_<task>_log.out``/``.err``) are under
``<results>/sweeps/<grid>/submitit/``; each cell's own output is in its cell log. The
driver waits for the tasks and reports them; if it dies, the tasks keep running, and the
same command later resumes without submitting cells that are still running.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.sweep.order import Unit
from medtransfer.sweep.runner import RunContext, run_unit
from medtransfer.sweep.state import cell_status

try:
    import submitit
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "Running a sweep through submitit needs the submitit package: "
        "pip install 'medtransfer[slurm]'."
    ) from None

POLL_SECONDS = 1.0

#: Grid resource name -> submitit parameter on Slurm (the shared ones keep their names).
_SLURM_NAMES = {
    "partition": "slurm_partition",
    "array_parallelism": "slurm_array_parallelism",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "setup": "slurm_setup",
}
_SHARED = ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb")


class UnitTask(submitit.helpers.Checkpointable):
    """One task: the cells of one unit (pickled by submitit; holds plain JSON values)."""

    def __init__(self, context: dict[str, Any], unit: dict[str, Any]) -> None:
        self.context = context
        self.unit = unit

    def __call__(self) -> list[tuple[str, str]]:
        ctx = RunContext.from_json(self.context)
        return run_unit(ctx, Unit.from_json(self.unit))


def check_slurm() -> None:
    """Raise ConfigError unless ``sbatch`` is on the PATH."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "--executor slurm needs Slurm's sbatch on the PATH, and there is none here. Run "
            "the command on a Slurm login node, or use --executor local (this machine) or "
            "--executor submitit-local (submitit's local executor, to try the grid)."
        )


def parameters(resources: dict[str, Any], cluster: str, name: str) -> dict[str, Any]:
    """submitit parameters for a unit's ``resources`` on ``cluster`` (``slurm`` or
    ``local``; the local executor takes only the shared ones)."""
    params: dict[str, Any] = {"name": name}
    params.update({key: resources[key] for key in _SHARED if key in resources})
    if cluster == "slurm":
        params.update({_SLURM_NAMES[k]: v for k, v in resources.items() if k in _SLURM_NAMES})
    return params


def run_submitit(
    ctx: RunContext,
    units: Sequence[Unit],
    cluster: str,
    jobs: int = 1,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Submit ``units`` (one stage) to ``cluster`` and wait for them; the problems of tasks
    that did not finish (cells that failed are in their states, not here). On the local
    cluster at most ``jobs`` tasks run at once."""
    executor = submitit.AutoExecutor(folder=ctx.folder / "submitit" / "%j", cluster=cluster)
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(json.dumps(unit.resources, sort_keys=True), []).append(unit)
    waiting: list[tuple[Any, Unit]] = []
    problems: list[str] = []
    try:
        for group in groups.values():
            executor.update_parameters(**parameters(group[0].resources, cluster, ctx.grid))
            tasks = [UnitTask(ctx.to_json(), unit.to_json()) for unit in group]
            if cluster == "slurm":
                submitted = executor.submit_array(tasks)
                say(f"submitted job array {submitted[0].job_id.split('_')[0]}: {len(tasks)} tasks")
                waiting.extend(zip(submitted, group, strict=True))
                continue
            for task, unit in zip(tasks, group, strict=True):
                while sum(not job.done() for job, _ in waiting) >= jobs:
                    time.sleep(POLL_SECONDS)
                waiting.append((executor.submit(task), unit))
        for job, unit in waiting:
            problems.extend(_collect(ctx, job, unit, say))
    except KeyboardInterrupt:
        if cluster == "local":
            for job, _ in waiting:
                job.cancel(check=False)
        raise
    return problems


def _collect(ctx: RunContext, job: Any, unit: Unit, say: Callable[[str], None]) -> list[str]:
    """Wait for ``job``; say how each cell of its unit stands; its problem, if it did not
    finish."""
    while not job.done():
        time.sleep(POLL_SECONDS)
    try:
        job.result()
    except Exception as exc:  # the task itself failed (killed, out of memory, ...)
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        return [
            f"task {job.job_id} ({len(unit.cells)} cell(s), from {unit.cells[0].label}) did "
            f"not finish: {reason}; task log {job.paths.stderr}"
        ]
    for cell in unit.cells:  # a requeued task returns only what its last run did
        status = cell_status(ctx.roots.results, cell.key).status
        say(f"{status}: {cell.label} ({cell.short}; task {job.job_id})")
    return []
