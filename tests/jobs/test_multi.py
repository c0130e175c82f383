"""Several models in one command: each runs on the dataset resolved once, then one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.cli import main
from medtransfer.config import Roots
from medtransfer.jobs.multi import split_models
from tests.jobs.conftest import SIZE

FLAGS = ["-i", str(SIZE), "--device", "cpu", "--no-progress", "--bootstrap", "0", "--k", "3"]


def _roots(roots: Roots) -> list[str]:
    return [
        *("--data-root", str(roots.data), "--cache-dir", str(roots.cache)),
        *("--results-dir", str(roots.results)),
    ]


def _records(roots: Roots) -> list[Path]:
    return sorted(roots.results.rglob("*.json"))


def test_repeated_and_comma_separated_models_all_run_and_end_in_one_table(
    job_roots: Roots, resolutions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["knn", "-d", "shenzhencxr", "-m", "random_r18", "-m", "random_r50,random_r18"]
    assert main([*_roots(job_roots), *args, *FLAGS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("== ")] == [
        "== random_r18 ==",
        "== random_r50 ==",
    ]
    assert resolutions == ["shenzhencxr"]  # the dataset was resolved once for both models
    header = out.index(next(line for line in out if line.startswith("model ")))
    assert out[header].split() == ["model", "metric", "value", "interval", "record"]
    rows = [line.split() for line in out[header + 2 :]]
    assert [row[0] for row in rows] == ["random_r18", "random_r50"]
    assert all(row[1:3] == ["k=3", "accuracy"] and Path(row[-1]).is_file() for row in rows)


def test_a_misspelt_model_fails_before_any_model_runs(
    job_roots: Roots, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _records(job_roots)
    args = ["knn", "-d", "shenzhencxr", "-m", "random_r18,randm_r50"]
    assert main([*_roots(job_roots), *args, *FLAGS]) == 2
    assert "randm_r50" in capsys.readouterr().err
    assert _records(job_roots) == before
    with_weights = ["knn", "-d", "shenzhencxr", "-m", "random_r18,random_r50", "--weights", "w.pt"]
    assert main([*_roots(job_roots), *with_weights, *FLAGS]) == 2
    assert "--weights belongs to one model" in capsys.readouterr().err


def test_a_model_without_its_weights_is_reported_and_the_others_still_run(
    job_roots: Roots, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")  # supervised_r18's weights need a download
    args = ["knn", "-d", "shenzhencxr", "-m", "supervised_r18,random_r18"]
    assert main([*_roots(job_roots), *args, *FLAGS]) == 2
    out = capsys.readouterr().out
    table = out[out.index("model  ") :].splitlines()
    assert table[2].split()[:2] == ["supervised_r18", "failed"]
    assert table[3].split()[0] == "random_r18"


def test_model_lists_split_on_commas_keep_order_and_drop_repeats() -> None:
    assert split_models("a, b,a,,c") == ["a", "b", "c"]
