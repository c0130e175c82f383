"""Presets: named settings that fill the options a user did not set, recorded in the record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from medtransfer.cli import build_parser, main
from medtransfer.config import Roots
from medtransfer.errors import ConfigError
from medtransfer.jobs.flags import given_values
from medtransfer.jobs.knn import KnnOptions
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.registry import JOBS, get_job
from tests.jobs.conftest import SIZE

KNN_ORIGINAL = {"temperature": 0.5, "ks": (3,), "split_policy": "original"}


def knn_with_preset():
    return dataclasses.replace(get_job("knn"), presets={"original": KNN_ORIGINAL})


def test_no_preset_gives_the_defaults_and_the_given_values() -> None:
    data, model, options, run = get_job("knn").resolve({"dataset": "bach", "model": "byol"})
    assert data == DataOptions("bach") and model == ModelOptions("byol")
    assert options == KnnOptions() and run == RunOptions()
    assert run.preset == "none" and run.preset_settings == {}


def test_a_preset_fills_only_what_the_user_did_not_set() -> None:
    given = {"dataset": "bach", "model": "byol", "temperature": 0.1}
    data, _, options, run = knn_with_preset().resolve(given, "original")
    assert options.temperature == 0.1  # given: the preset does not override it
    assert options.ks == (3,) and data.split_policy == "original"
    assert run.preset == "original"
    assert run.preset_settings == {"ks": (3,), "split_policy": "original"}


def test_unknown_presets_and_options_are_clear_errors() -> None:
    job = get_job("knn")
    with pytest.raises(ConfigError, match="Unknown preset 'paper'"):
        job.resolve({"dataset": "bach", "model": "byol"}, "paper")
    without = dataclasses.replace(job, presets={})
    with pytest.raises(ConfigError, match="knn has no preset 'original'; it offers: none"):
        without.resolve({"dataset": "bach", "model": "byol"}, "original")
    with pytest.raises(ConfigError, match=r"knn has no option.*n_way"):
        job.resolve({"dataset": "bach", "model": "byol", "n_way": 3})


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.name)
def test_every_preset_setting_names_one_option_of_its_job(job) -> None:
    job.check_presets()


def test_a_preset_naming_no_option_is_refused() -> None:
    broken = dataclasses.replace(get_job("knn"), presets={"original": {"n_way": 2}})
    with pytest.raises(TypeError, match="unknown fields"):
        broken.check_presets()


def test_flags_left_out_are_absent_so_a_preset_can_fill_them() -> None:
    args = build_parser().parse_args(["knn", "-d", "bach", "-m", "byol", "--k", "5,7"])
    given = given_values(KnnOptions, args)
    assert given == {"ks": (5, 7)}
    assert given_values(RunOptions, args) == {}


def test_demo_has_no_preset_flag() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--preset", "original"])


def test_the_record_names_the_preset_and_what_it_set(
    job_roots: Roots, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medtransfer.jobs import registry

    job = dataclasses.replace(
        knn_with_preset(), presets={"original": {"temperature": 0.5, "ks": (3,)}}
    )
    monkeypatch.setattr(registry, "JOBS", tuple(job if j.name == "knn" else j for j in JOBS))
    roots = [
        *("--data-root", str(job_roots.data), "--cache-dir", str(job_roots.cache)),
        *("--results-dir", str(job_roots.results)),
    ]
    flags = ["-i", str(SIZE), "--device", "cpu", "--no-progress", "--bootstrap", "0"]
    args = ["knn", "-d", "shenzhencxr", "-m", "random_r18", *flags, "--preset", "original"]
    assert main([*roots, *args, "--temperature", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "k=3:" in out and "k=10:" not in out
    record_path = Path(out.strip().splitlines()[-1].removeprefix("record: "))
    record = json.loads(record_path.read_text())
    assert record["params"]["preset"] == "original"
    assert record["params"]["temperature"] == 0.2 and record["params"]["ks"] == [3]
    assert record["preset_settings"] == {"ks": [3]}
