"""The local executor end to end (one job: the command runs the cells itself; worker
processes are in test_faults.py): records land in the results root once per cell, a second
run does nothing, failures are listed with their log and the command that retries them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from medtransfer.cli import main
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.state import cell_files, read_state
from tests.sweep.conftest import FAILING, TINY, records_by_cell, sweep_args, write_grid


def test_a_grid_runs_once_resumes_and_reports_its_failures(
    tmp_path: Path, sweep_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    path = write_grid(tmp_path, TINY + FAILING)
    grid = load_grid(path)
    failing = next(cell for cell in grid.cells if cell.raw.get("n_way") == 5)
    good = [cell for cell in grid.cells if cell is not failing]

    assert main(sweep_args(results, sweep_cache, str(path))) == 1  # here, one cell at a time
    out = capsys.readouterr().out
    assert records_by_cell(results) == {cell.key: 1 for cell in good}
    for cell in good:  # in the normal results root, where `medtransfer report` reads
        record = results / read_state(cell_files(results, cell.key))["record"]
        assert record.parts[-4:-1] == (cell.protocol, "random_r18", cell.raw["dataset"])
        assert json.loads(record.read_text())["sweep"]["grid"] == "tiny"
    records = [
        json.loads((results / read_state(cell_files(results, c.key))["record"]).read_text())
        for c in good
    ]
    extracted = [r["feature_key"] for r in records if r["features_extracted"]]
    assert len(extracted) == len(set(extracted))  # each set of features extracted once at most
    log = cell_files(results, failing.key).log
    assert f"FAILED {failing.label}" in out and f"log:   {log}" in out
    assert f"--only {failing.short} --rerun-failed" in out
    assert "ProtocolError" in log.read_text() and "Traceback" in log.read_text()
    assert "tiny: 6 cells: 5 done, 1 failed." in out

    # the same command again, with output-only options changed: nothing runs
    faster = TINY.replace("batch_size: 16", "batch_size: 4, workers: 0, progress: true")
    path = write_grid(tmp_path, faster + FAILING)
    started = time.perf_counter()
    assert main(sweep_args(results, sweep_cache, str(path))) == 1
    out = capsys.readouterr().out
    assert "tiny: nothing to run; 6 cells: 5 done, 1 failed." in out
    assert "add --rerun-failed" in out and time.perf_counter() - started < 20
    assert records_by_cell(results) == {cell.key: 1 for cell in good}

    # retrying the failed cell alone runs it again (and it fails again)
    args = sweep_args(results, sweep_cache, str(path), "--only", failing.short, "--rerun-failed")
    assert main(args) == 1
    assert read_state(cell_files(results, failing.key))["attempts"] == 2
    assert log.read_text().count("==== failed: ProtocolError") == 2

    # status: every cell with its state and where its record (or log) is
    capsys.readouterr()
    assert main(sweep_args(results, sweep_cache, "status", str(path))) == 0
    out = capsys.readouterr().out
    for cell in good:
        record = read_state(cell_files(results, cell.key))["record"]
        assert f"{cell.short}  done" in out and record in out
    assert f"{failing.short}  failed" in out and str(log) in out
    assert "6 cells: 5 done, 1 failed" in out

    # records outlive the sweep's own state: without it, they are found again, not re-run
    shutil.rmtree(results / "sweeps")
    only = [arg for cell in good for arg in ("--only", cell.short)]
    assert main(sweep_args(results, sweep_cache, str(path), *only)) == 0
    assert "nothing to run; 5 cells: 5 done." in capsys.readouterr().out
    assert records_by_cell(results) == {cell.key: 1 for cell in good}


def test_slurm_without_sbatch_is_a_clear_error(
    tmp_path: Path, sweep_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    path = write_grid(tmp_path)
    assert (
        main(sweep_args(tmp_path / "results", sweep_cache, str(path), "--executor", "slurm")) == 2
    )
    err = capsys.readouterr().err
    assert "--executor slurm needs Slurm's sbatch on the PATH" in err
    assert not (tmp_path / "results").exists()  # nothing was written


def test_bad_flags_are_refused_before_anything_runs(
    tmp_path: Path, sweep_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_grid(tmp_path)
    results = tmp_path / "results"
    assert main(sweep_args(results, sweep_cache, str(path), "--only", "zzzz")) == 2
    assert "--only zzzz: no cell" in capsys.readouterr().err
    assert main(sweep_args(results, sweep_cache, str(path), "--jobs", "0")) == 2
    assert main(sweep_args(results, sweep_cache, str(path), str(path))) == 2
    assert "Give one grid file" in capsys.readouterr().err
    assert not results.exists()


def test_each_worker_gets_one_gpu_and_a_share_of_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from medtransfer.sweep.local import visible_gpus, worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus(3) == ["2", "5"]
    envs = [worker_env(i, 3, ["2", "5"]) for i in range(3)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["2", "5", "2"]
    assert all(int(env["OMP_NUM_THREADS"]) >= 1 for env in envs)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_env(0, 2, [])["OMP_NUM_THREADS"] == "3"  # the user's setting stays
