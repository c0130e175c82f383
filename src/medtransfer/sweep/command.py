"""``medtransfer sweep GRID.yaml`` and ``medtransfer sweep status GRID.yaml``."""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medtransfer.config import Roots
from medtransfer.errors import ConfigError
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.grid import Grid, load_grid
from medtransfer.sweep.order import Unit, make_units, stages
from medtransfer.sweep.parts import PartTask
from medtransfer.sweep.runner import RunContext, adopt_records, retry_command, wants_run
from medtransfer.sweep.split import SplitPlan, part_store, plan_splits, schedule
from medtransfer.sweep.state import (
    DONE,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    CellStatus,
    cell_files,
    cell_status,
)
from medtransfer.sweep.synthetic import ensure_synthetic, synthetic_root
from medtransfer.textable import format_table

#: A task of a sweep: a cell, or an extraction part.
Task = Cell | PartTask

EXECUTORS = ("local", "slurm", "submitit-local")
USAGE = "medtransfer sweep GRID.yaml [options]  |  medtransfer sweep status GRID.yaml"


def sweep_command(roots: Roots, args: argparse.Namespace) -> int:
    """Dispatch ``sweep GRID`` and ``sweep status GRID``."""
    if args.target == "status" and args.grid is not None:
        return sweep_status(roots, Path(args.grid), args.only)
    if args.grid is not None or args.target == "status":
        raise ConfigError(f"Give one grid file; usage: {USAGE}")
    return run_sweep(roots, Path(args.target), args)


@dataclass(frozen=True)
class _Selection:
    """The cells a command works on, the grid's extraction plan, and the parts chosen by
    their own key (``--only`` a part)."""

    cells: list[Cell]
    plan: SplitPlan
    alone: list[PartTask]

    def parts(self, statuses: dict[str, CellStatus]) -> list[PartTask]:
        """The parts worth showing (``statuses``: of the cells and every part of the plan):
        those of cells not done yet, those that ran (they have a state) and those chosen
        alone; a part that nothing needs and that never ran is left out (as after adding
        ``split_extraction`` to a finished grid)."""
        waiting = [c for c in self.cells if statuses[c.key].status != DONE]
        needed = {part.key for part in (*self.plan.of(waiting), *self.alone)}
        chosen = {part.key: part for part in (*self.plan.of(self.cells), *self.alone)}
        return [
            part for key, part in chosen.items() if key in needed or statuses[key].state is not None
        ]


def _data_roots(roots: Roots, grid: Grid) -> Roots:
    """``roots`` with the grid's synthetic trees as the data root, when it asks for them."""
    if grid.synthetic is None:
        return roots
    return replace(roots, data=synthetic_root(roots.cache, grid.synthetic))


def _select(roots: Roots, grid: Grid, only: Sequence[str] | None) -> _Selection:
    """The cells (and parts) ``only`` names (all cells without it), with the grid's
    extraction plan. Planning opens the datasets of the cells that ask for a split (and
    writes a synthetic grid's trees first)."""
    if grid.synthetic is not None and any(cell.split for cell in grid.cells):
        ensure_synthetic(roots, grid.synthetic, grid.datasets)  # their sizes are needed
    plan = plan_splits(roots, grid.cells)
    cells = list(grid.cells)
    if not only:
        return _Selection(cells, plan, [])
    chosen: list[Cell] = []
    alone: list[PartTask] = []
    for prefix in only:
        matches = [c for c in cells if c.key.startswith(prefix.lower())]
        parts = [p for p in plan.parts if p.key.startswith(prefix.lower())]
        if len(prefix) < 4 or not (matches or parts):
            raise ConfigError(
                f"--only {prefix}: no cell (or extraction part) of {grid.file} has a key "
                "starting so (give at least 4 hex digits; `medtransfer sweep GRID --dry-run` "
                "lists them)."
            )
        chosen.extend(c for c in matches if c not in chosen)
        alone.extend(p for p in parts if p not in alone)
    return _Selection(chosen, plan, alone)


def _statuses(results: Path, tasks: Sequence[Task]) -> dict[str, CellStatus]:
    return {task.key: cell_status(results, task.key) for task in tasks}


def _line(task: Task) -> str:
    return task.where.rsplit(":", 2)[-2] if task.where.count(":") >= 2 else ""


def _where(results: Path, task: Task, status: CellStatus) -> str:
    if status.record is not None:
        return str(status.record.relative_to(results))
    store = part_store(status.state) if status.status == DONE else None
    if store is not None:
        return str(store)
    if status.status in (FAILED, RUNNING, INTERRUPTED):
        return str(cell_files(results, task.key).log)
    return ""


def _table(results: Path, tasks: Sequence[Task], statuses: dict[str, CellStatus]) -> str:
    rows = []
    for task in tasks:
        status = statuses[task.key]
        shown = status.status
        if status.status == RUNNING and status.state:
            shown = f"running ({status.state.get('host')}:{status.state.get('pid')})"
        rows.append((task.short, shown, _line(task), task.label, _where(results, task, status)))
    return format_table(("cell", "status", "line", "cell settings", "record or log"), rows)


def _counts(statuses: dict[str, CellStatus]) -> str:
    counts = Counter(s.status for s in statuses.values())
    order = (DONE, RUNNING, FAILED, INTERRUPTED, PENDING)
    return ", ".join(f"{counts[name]} {name}" for name in order if counts[name])


def _summary(
    cells: Sequence[Cell], parts: Sequence[PartTask], statuses: dict[str, CellStatus]
) -> str:
    """``6 cells: 5 done, 1 failed`` and, when there are parts, ``; 3 extraction parts: ...``."""
    text = f"{len(cells)} cells: {_counts(_of(statuses, cells))}" if cells else "0 cells"
    if parts:
        text += f"; {len(parts)} extraction parts: {_counts(_of(statuses, parts))}"
    return text


def sweep_status(roots: Roots, path: Path, only: Sequence[str] | None = None) -> int:
    """Print every cell of the grid (and every extraction part) with its status and where
    its record (a part: its store, or log) is."""
    grid = load_grid(path)
    roots = _data_roots(roots, grid)
    selection = _select(roots, grid, only)
    statuses = _statuses(roots.results, [*selection.cells, *selection.plan.parts])
    parts = selection.parts(statuses)
    print(_table(roots.results, [*selection.cells, *parts], statuses))
    print(f"\n{grid.name}: {_summary(selection.cells, parts, statuses)}")
    _notes(selection.plan)
    print(f"records are under {roots.results}; cell logs under {roots.results / 'sweeps/cells'}")
    return 0


def run_sweep(roots: Roots, path: Path, args: argparse.Namespace) -> int:
    """Validate the grid, then run (or with ``--dry-run`` list) the cells left to run, after
    the extraction parts they wait for."""
    grid = load_grid(path)
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: give 1 or more workers.")
    if args.executor == "slurm" and args.jobs != 1:
        raise ConfigError(
            "--jobs is for the local executors; on Slurm set `slurm: {array_parallelism: N}` "
            "in the grid file."
        )
    if args.executor == "slurm" and not args.dry_run:
        from medtransfer.sweep.slurm import check_slurm

        check_slurm()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    roots = _data_roots(roots, grid)  # synthetic trees are written when something runs
    selection = _select(roots, grid, args.only)
    cells = selection.cells
    ctx = RunContext(
        roots, run_id, grid.name, str(grid.file), args.executor, args.force, args.rerun_failed
    )
    results = roots.results
    if not args.dry_run:
        adopt_records(results, cells)
    statuses = _statuses(results, [*cells, *selection.plan.parts])
    parts = selection.parts(statuses)
    elsewhere = args.executor == "slurm"  # do not spend allocations waiting on other runs

    def runs(task: Task) -> bool:
        status = statuses[task.key]
        return wants_run(ctx, status.state, results) and not (
            elsewhere and status.status == RUNNING
        )

    todo = [c for c in cells if runs(c)]
    units = schedule(make_units(todo), selection.plan, runs, selection.alone)
    parts_todo = [unit.parts[0] for unit in units if not unit.cells]
    first = f" and {len(parts_todo)} extraction part(s) before them" if parts_todo else ""
    split = f"; {len(parts)} extraction parts ({_counts(_of(statuses, parts))})" if parts else ""
    if args.dry_run:
        print(_table(results, [*cells, *parts], statuses))
        print(
            f"\n{grid.file}: valid; {len(cells)} cells ({_counts(_of(statuses, cells))}"
            + (f"; {grid.merged} written twice, kept once" if grid.merged else "")
            + f"){split}"
            + f"; {len(todo)} would run{first} with --executor {args.executor}. Data root: "
            + str(roots.data)
        )
        _notes(selection.plan)
        return 0
    _notes(selection.plan)
    if not todo and not parts_todo:
        print(f"{grid.name}: nothing to run; {_summary(cells, parts, statuses)}.")
        return _report(ctx, cells, parts)
    if grid.synthetic is not None:
        ensure_synthetic(roots, grid.synthetic, grid.datasets)
    what = (
        f"{len(todo)} of {len(cells)} cells to run in {len(units) - len(parts_todo)} unit(s) "
        f"(cells sharing features run together){first}"
        if todo
        else f"{len(parts_todo)} extraction part(s) to run"
    )
    print(f"{grid.name}: {what}; executor {args.executor}; run {run_id}")
    problems = _execute(ctx, units, args)
    for problem in problems:
        print(f"problem: {problem}")
    return _report(ctx, cells, parts)


def _notes(plan: SplitPlan) -> None:
    """Say which datasets could not be sized (their extraction is not split)."""
    for note in plan.notes:
        print(f"note: {note}")


def _of(statuses: dict[str, CellStatus], tasks: Sequence[Task]) -> dict[str, CellStatus]:
    return {task.key: statuses[task.key] for task in tasks}


def _execute(ctx: RunContext, units: list[Unit], args: argparse.Namespace) -> list[str]:
    """Run the units stage by stage; a stage that leaves cells unfinished stops the rest."""
    problems: list[str] = []
    by_stage = stages(units)
    plan = None
    if args.executor == "local" and args.jobs > 1:
        from medtransfer.sweep.local import run_local, write_plan

        plan = write_plan(ctx, units)
    for index, stage_units in enumerate(by_stage):
        if args.executor == "local" and plan is None:
            from medtransfer.sweep.worker import work

            work(ctx, stage_units)  # one at a time, in this process
        elif args.executor == "local":
            problems += run_local(ctx, plan, stage_units, args.jobs)
        else:
            from medtransfer.sweep.slurm import run_submitit

            cluster = "slurm" if args.executor == "slurm" else "local"
            problems += run_submitit(ctx, stage_units, cluster, args.jobs)
        cells = [cell for unit in stage_units for cell in unit.cells]
        statuses = _statuses(ctx.roots.results, cells)
        left = [c for c in cells if statuses[c.key].status in (PENDING, INTERRUPTED, RUNNING)]
        if left and index + 1 < len(by_stage):
            problems.append(
                f"stage {stage_units[0].stage} left {len(left)} cell(s) unfinished; later "
                "stages were not started"
            )
            break
    return problems


def _report(ctx: RunContext, cells: Sequence[Cell], parts: Sequence[PartTask] = ()) -> int:
    """Print the sweep's outcome (failures with their logs and the command to retry
    each); 0 when every cell and extraction part is done."""
    results = ctx.roots.results
    tasks: list[Task] = [*parts, *cells]  # a failed part first: cells may fail with it
    statuses = _statuses(results, tasks)
    failed = [t for t in tasks if statuses[t.key].status == FAILED]
    for task in failed:
        state = statuses[task.key].state or {}
        kind = "cell" if isinstance(task, Cell) else "extraction part"
        print(f"\nFAILED {task.label}  ({kind} {task.short}, {task.where})")
        print(f"  error: {state.get('error')}")
        print(f"  log:   {cell_files(results, task.key).log}")
        print(f"  retry: {retry_command(ctx, task)}")
    unfinished = [t for t in tasks if statuses[t.key].status in (PENDING, INTERRUPTED)]
    running = [t for t in tasks if statuses[t.key].status == RUNNING]
    print(f"\n{ctx.grid}: {_summary(cells, parts, statuses)}.")
    if failed and not ctx.rerun_failed:
        print("Failed cells are not retried by a plain re-run; add --rerun-failed.")
    if unfinished:
        print(f"{len(unfinished)} task(s) did not finish; run the same command again to resume.")
    if running:
        print(f"{len(running)} task(s) are running elsewhere; `medtransfer sweep status` follows.")
    return 0 if len(failed) + len(unfinished) + len(running) == 0 else 1
