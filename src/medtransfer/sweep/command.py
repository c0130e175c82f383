"""``medtransfer sweep GRID.yaml`` and ``medtransfer sweep status GRID.yaml``."""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medtransfer.config import Roots
from medtransfer.errors import ConfigError
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.grid import Grid, load_grid
from medtransfer.sweep.order import Unit, make_units, stages
from medtransfer.sweep.runner import RunContext, adopt_records, retry_command, wants_run
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

EXECUTORS = ("local", "slurm", "submitit-local")
USAGE = "medtransfer sweep GRID.yaml [options]  |  medtransfer sweep status GRID.yaml"


def sweep_command(roots: Roots, args: argparse.Namespace) -> int:
    """Dispatch ``sweep GRID`` and ``sweep status GRID``."""
    if args.target == "status" and args.grid is not None:
        return sweep_status(roots, Path(args.grid), args.only)
    if args.grid is not None or args.target == "status":
        raise ConfigError(f"Give one grid file; usage: {USAGE}")
    return run_sweep(roots, Path(args.target), args)


def _select(grid: Grid, only: Sequence[str] | None) -> list[Cell]:
    cells = list(grid.cells)
    if not only:
        return cells
    chosen = []
    for prefix in only:
        matches = [c for c in cells if c.key.startswith(prefix.lower())]
        if len(prefix) < 4 or not matches:
            raise ConfigError(
                f"--only {prefix}: no cell of {grid.file} has a key starting so (give at least "
                "4 hex digits; `medtransfer sweep GRID --dry-run` lists the cells)."
            )
        chosen.extend(c for c in matches if c not in chosen)
    return chosen


def _statuses(results: Path, cells: Sequence[Cell]) -> dict[str, CellStatus]:
    return {cell.key: cell_status(results, cell.key) for cell in cells}


def _line(cell: Cell) -> str:
    return cell.where.rsplit(":", 2)[-2] if cell.where.count(":") >= 2 else ""


def _where(results: Path, cell: Cell, status: CellStatus) -> str:
    if status.record is not None:
        return str(status.record.relative_to(results))
    if status.status in (FAILED, RUNNING, INTERRUPTED):
        return str(cell_files(results, cell.key).log)
    return ""


def _table(results: Path, cells: Sequence[Cell], statuses: dict[str, CellStatus]) -> str:
    rows = []
    for cell in cells:
        status = statuses[cell.key]
        shown = status.status
        if status.status == RUNNING and status.state:
            shown = f"running ({status.state.get('host')}:{status.state.get('pid')})"
        rows.append((cell.short, shown, _line(cell), cell.label, _where(results, cell, status)))
    return format_table(("cell", "status", "line", "cell settings", "record or log"), rows)


def _counts(statuses: dict[str, CellStatus]) -> str:
    counts = Counter(s.status for s in statuses.values())
    order = (DONE, RUNNING, FAILED, INTERRUPTED, PENDING)
    return ", ".join(f"{counts[name]} {name}" for name in order if counts[name])


def sweep_status(roots: Roots, path: Path, only: Sequence[str] | None = None) -> int:
    """Print every cell of the grid with its status and where its record (or log) is."""
    grid = load_grid(path)
    cells = _select(grid, only)
    statuses = _statuses(roots.results, cells)
    print(_table(roots.results, cells, statuses))
    print(f"\n{grid.name}: {len(cells)} cells: {_counts(statuses)}")
    print(f"records are under {roots.results}; cell logs under {roots.results / 'sweeps/cells'}")
    return 0


def run_sweep(roots: Roots, path: Path, args: argparse.Namespace) -> int:
    """Validate the grid, then run (or with ``--dry-run`` list) the cells left to run."""
    grid = load_grid(path)
    cells = _select(grid, args.only)
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
    if grid.synthetic is not None:  # written when something runs (ensure_synthetic)
        roots = replace(roots, data=synthetic_root(roots.cache, grid.synthetic))
    ctx = RunContext(
        roots, run_id, grid.name, str(grid.file), args.executor, args.force, args.rerun_failed
    )
    results = roots.results
    if not args.dry_run:
        adopt_records(results, cells)
    statuses = _statuses(results, cells)
    elsewhere = args.executor == "slurm"  # do not spend allocations waiting on other runs
    todo = [
        c
        for c in cells
        if wants_run(ctx, statuses[c.key].state, results)
        and not (elsewhere and statuses[c.key].status == RUNNING)
    ]
    if args.dry_run:
        print(_table(results, cells, statuses))
        print(
            f"\n{grid.file}: valid; {len(cells)} cells ({_counts(statuses)}"
            + (f"; {grid.merged} written twice, kept once" if grid.merged else "")
            + f"); {len(todo)} would run with --executor {args.executor}. Data root: "
            + str(roots.data)
        )
        return 0
    if not todo:
        print(f"{grid.name}: nothing to run; {len(cells)} cells: {_counts(statuses)}.")
        return _report(ctx, cells)
    if grid.synthetic is not None:
        ensure_synthetic(roots, grid.synthetic, grid.datasets)
    units = make_units(todo)
    print(
        f"{grid.name}: {len(todo)} of {len(cells)} cells to run in {len(units)} unit(s) "
        f"(cells sharing features run together); executor {args.executor}; run {run_id}"
    )
    problems = _execute(ctx, units, args)
    for problem in problems:
        print(f"problem: {problem}")
    return _report(ctx, cells)


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


def _report(ctx: RunContext, cells: Sequence[Cell]) -> int:
    """Print the sweep's outcome (failures with their logs and the command to retry
    each); 0 when every cell is done."""
    results = ctx.roots.results
    statuses = _statuses(results, cells)
    failed = [c for c in cells if statuses[c.key].status == FAILED]
    for cell in failed:
        state = statuses[cell.key].state or {}
        print(f"\nFAILED {cell.label}  (cell {cell.short}, {cell.where})")
        print(f"  error: {state.get('error')}")
        print(f"  log:   {cell_files(results, cell.key).log}")
        print(f"  retry: {retry_command(ctx, cell)}")
    unfinished = [c for c in cells if statuses[c.key].status in (PENDING, INTERRUPTED)]
    running = [c for c in cells if statuses[c.key].status == RUNNING]
    print(f"\n{ctx.grid}: {len(cells)} cells: {_counts(statuses)}.")
    if failed and not ctx.rerun_failed:
        print("Failed cells are not retried by a plain re-run; add --rerun-failed.")
    if unfinished:
        print(f"{len(unfinished)} cell(s) did not finish; run the same command again to resume.")
    if running:
        print(f"{len(running)} cell(s) are running elsewhere; `medtransfer sweep status` follows.")
    return 0 if len(failed) + len(unfinished) + len(running) == 0 else 1
