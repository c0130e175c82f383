"""The Slurm executor, through submitit; and submitit's local executor, which runs the same
submission, pickling and result collection as processes on this machine (to try a grid
before a cluster run, and for the tests).

Each unit is one task; the units of a stage that ask for the same resources are one job
array (``array_parallelism`` of them at once). A task is a submitit ``Checkpointable``:
when Slurm preempts it, or its time runs out, submitit requeues it, and the requeued task
runs what its unit has left (finished cells have their records; the interrupted one runs
again). Extraction parts (:mod:`medtransfer.sweep.split`) are units of their own,
submitted first; the arrays of units whose cells wait for parts depend on the part arrays
(``--dependency=afterany:...``), so they queue without holding an allocation, and start
once every part has ended (a part that failed leaves its rows to the cells). On submitit's
local executor, which has no dependencies, the part tasks are started first and the units
wait for them by lock. Task logs (``<job id>_<task>_log.out``/``.err``) are under
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


def parameters(
    resources: dict[str, Any], cluster: str, name: str, after: Sequence[str] = ()
) -> dict[str, Any]:
    """submitit parameters for a unit's ``resources`` on ``cluster`` (``slurm`` or
    ``local``; the local executor takes only the shared ones); ``after``: Slurm job ids
    whose end the tasks wait for."""
    params: dict[str, Any] = {"name": name}
    params.update({key: resources[key] for key in _SHARED if key in resources})
    if cluster == "slurm":
        params.update({_SLURM_NAMES[k]: v for k, v in resources.items() if k in _SLURM_NAMES})
        if after:
            params["slurm_dependency"] = f"afterany:{':'.join(after)}"
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
    groups: dict[tuple[int, str], list[Unit]] = {}
    for unit in units:
        resources = json.dumps(unit.resources, sort_keys=True)
        groups.setdefault((_kind(unit), resources), []).append(unit)
    waiting: list[tuple[Any, Unit]] = []
    problems: list[str] = []
    part_arrays: dict[str, str] = {}  # part key -> its array's job id
    try:
        for (kind, _), group in sorted(groups.items(), key=lambda item: item[0][0]):
            needs_parts = kind == _WAITS
            after = sorted(
                {part_arrays[p.key] for u in group for p in u.parts if p.key in part_arrays}
            )
            # an executor per group: submitit keeps parameters once set (a dependency too)
            executor = submitit.AutoExecutor(folder=ctx.folder / "submitit" / "%j", cluster=cluster)
            executor.update_parameters(
                **parameters(group[0].resources, cluster, ctx.grid, after if needs_parts else ())
            )
            tasks = [UnitTask(ctx.to_json(), unit.to_json()) for unit in group]
            if cluster == "slurm":
                submitted = executor.submit_array(tasks)
                array = submitted[0].job_id.split("_")[0]
                what = "extraction part" if not group[0].cells else "unit"
                waits = f", after {', '.join(after)}" if needs_parts and after else ""
                say(f"submitted job array {array}: {len(tasks)} {what} task(s){waits}")
                for unit in group:
                    part_arrays.update({p.key: array for p in unit.parts if not unit.cells})
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


_PART, _FREE, _WAITS = 0, 1, 2


def _kind(unit: Unit) -> int:
    """The order units are submitted in: extraction parts, units that wait for none, units
    that wait for parts."""
    if not unit.cells:
        return _PART
    return _WAITS if unit.parts else _FREE


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
            f"task {job.job_id} ({unit.label}) did not finish: {reason}; task log "
            f"{job.paths.stderr}"
        ]
    for task in unit.cells or unit.parts:  # a requeued task returns only its last run's
        status = cell_status(ctx.roots.results, task.key).status
        say(f"{status}: {task.label} ({task.short}; task {job.job_id})")
    return []
