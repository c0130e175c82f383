"""The submitit path for real, on submitit's local executor: pickled unit tasks in processes
of their own, a task preempted mid-cell (SIGUSR2, the signal Slurm sends before it
preempts or times out a job) requeued and finished, results collected by the driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from medtransfer.cli import main
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.slurm import parameters
from medtransfer.sweep.state import cell_files
from tests.sweep.conftest import TINY, records_by_cell, sweep_args, write_grid
from tests.sweep.test_faults import states, wait_for

FEW_SHOT_ONLY = TINY[: TINY.index("  - protocol: knn")]


def test_a_grid_runs_through_submitit_and_survives_a_preemption(
    tmp_path: Path, sweep_cache: Path
) -> None:
    results = tmp_path / "results"
    grid = write_grid(tmp_path, FEW_SHOT_ONLY)
    cells = load_grid(grid).cells
    command = [sys.executable, "-m", "medtransfer.cli"]
    args = sweep_args(results, sweep_cache, str(grid), "--executor", "submitit-local")
    with (tmp_path / "out.txt").open("w") as out:
        driver = subprocess.Popen([*command, *args, "--jobs", "2"], stdout=out, stderr=out)
        running = wait_for(
            lambda: [s for s in states(results) if s["state"] == "running" and s["pid"]]
        )
        os.kill(running[0]["pid"], signal.SIGUSR2)
        assert driver.wait(timeout=300) == 0
    text = (tmp_path / "out.txt").read_text()
    assert "tiny: 4 cells: 4 done." in text
    assert records_by_cell(results) == {cell.key: 1 for cell in cells}
    task_logs = list((results / "sweeps" / "tiny" / "submitit").rglob("*_log.out"))
    assert len(task_logs) == 2  # one task per unit, logs under the results root
    # submitit says so where the task's output went at that moment: the log of the cell it
    # was running (then that cell ran twice) or the task's own log
    cell_logs = {c.key: cell_files(results, c.key).log.read_text() for c in cells}
    texts = [*cell_logs.values(), *(path.read_text() for path in task_logs)]
    assert sum("Requeued job" in text for text in texts) == 1
    for key, text in cell_logs.items():
        state = json.loads(cell_files(results, key).state.read_text())
        assert state["state"] == "done" and state["executor"] == "submitit-local"
        assert state["attempts"] == (2 if "Requeued job" in text else 1)
        assert text.count("==== done") == 1
    assert main(sweep_args(results, sweep_cache, str(grid), "--executor", "submitit-local")) == 0
    assert records_by_cell(results) == {cell.key: 1 for cell in cells}


def test_slurm_parameters_come_from_the_grid() -> None:
    resources = {
        "partition": "gpu",
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "mem_gb": 64,
        "timeout_min": 30,
        "array_parallelism": 4,
        "setup": ["module load cuda"],
    }
    assert parameters(resources, "slurm", "study") == {
        "name": "study",
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "mem_gb": 64,
        "timeout_min": 30,
        "slurm_partition": "gpu",
        "slurm_array_parallelism": 4,
        "slurm_setup": ["module load cuda"],
    }
    local = parameters(resources, "local", "study")
    assert not any(name.startswith("slurm_") for name in local)
