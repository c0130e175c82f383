"""The registry: every job is a sub-command whose flags and defaults come from its options."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from medtransfer.cli import build_parser, main
from medtransfer.config import Roots
from medtransfer.errors import ConfigError
from medtransfer.jobs.base import JobResult, split_doc
from medtransfer.jobs.flags import from_args, int_list
from medtransfer.jobs.knn import KnnOptions
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.registry import JOBS, get_job

REQUIRED = ["-d", "shenzhencxr", "-m", "random_r18"]


def test_job_names_are_unique_and_every_job_has_help() -> None:
    names = [job.name for job in JOBS]
    assert names == ["few-shot", "linear", "knn", "finetune", "reconstruct", "perceptual-distance"]
    for job in JOBS:
        assert job.help and job.description and not job.help.endswith(".")
        # jobs over records or files (perceptual-distance) take no data options
        assert job.options[0] is DataOptions or DataOptions not in job.options
        assert job.options[-1] is RunOptions
        assert get_job(job.name) is job
    with pytest.raises(KeyError, match="few-shot"):
        get_job("saliency")


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.name)
def test_cli_defaults_are_the_options_defaults(job) -> None:
    required_flags = REQUIRED if DataOptions in job.options else []
    args = build_parser().parse_args([job.name, *required_flags])
    assert args.command == job.name
    for options in job.options:
        built = from_args(options, args)
        required = {"dataset": "shenzhencxr", "model": "random_r18"}
        expected = options(
            **{f.name: required[f.name] for f in dataclasses.fields(options) if f.name in required}
        )
        assert built == expected
        for field in dataclasses.fields(options):
            assert field.metadata.get("help"), f"{options.__name__}.{field.name} has no help"


def test_short_flags_and_switches_reach_the_options() -> None:
    flags = ["-p", "7", "-e", "-s", "-g", "3", "-i", "64", "-n", "--no-da", "--test-last"]
    more = ["--seeds", "1,2", "--no-progress", "--batch-size", "8"]
    args = build_parser().parse_args(["finetune", *REQUIRED, *flags, *more])
    options = from_args(get_job("finetune").options[2], args)
    assert (options.patience, options.early_stopping, options.search) == (7, True, True)
    assert (options.grid_size, options.image_size, options.seeds) == (3, 64, (1, 2))
    assert options.augment is False and options.restore_best is False
    assert from_args(ModelOptions, args).no_norm is True
    run = from_args(RunOptions, args)
    assert run.progress is False and run.use_prepared is True and run.batch_size == 8
    linear = build_parser().parse_args(["linear", *REQUIRED, "-c", "0.5", "-w", "9"])
    options = from_args(get_job("linear").options[2], linear)
    assert (options.C, options.grid_size) == (0.5, 9)


def test_bad_integer_lists_name_their_flag() -> None:
    assert int_list("10, 20,", "--k") == (10, 20)
    with pytest.raises(ConfigError, match="--k takes comma-separated integers"):
        int_list("ten", "--k")
    with pytest.raises(ConfigError, match="--seeds needs at least one value"):
        int_list(",", "--seeds")


def test_help_and_description_come_from_the_docstring() -> None:
    assert split_doc("Fine-tune it (well).\n\nLong text\nhere.") == (
        "fine-tune it (well)",
        "Long text\nhere.",
    )
    assert split_doc("One line only.") == ("one line only", "")


def test_the_cli_prints_the_lines_as_the_job_returns_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "record.json"
    lines = ["Accuracy on val set: kept as it is", "second line"]

    def fake(
        roots: Roots, data: DataOptions, model: ModelOptions, knn: KnnOptions, run: RunOptions
    ):
        return JobResult(record, {}, {}, lines, extracted=False)

    job = dataclasses.replace(get_job("knn"), run=fake)
    monkeypatch.setattr("medtransfer.jobs.registry.JOBS", (job,))
    assert main(["knn", *REQUIRED]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["features: read from the feature store", *lines, f"record: {record}"]


def test_building_the_command_line_imports_no_torch() -> None:
    code = (
        "import sys; from medtransfer.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'sklearn', 'torchvision') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_new_options_class_gets_its_flags_from_its_fields() -> None:
    import argparse
    from dataclasses import dataclass

    from medtransfer.jobs.flags import add_flags, option

    @dataclass(frozen=True)
    class Saliency:
        layers: tuple[int, ...] = option((3, 4), "layers to map", parse=int_list)
        patch: int = option(10, "occlusion patch side")
        keep: bool = option(True, "drop the maps", flags=("--no-keep",))

    parser = argparse.ArgumentParser()
    add_flags(parser, Saliency)
    assert "(default: 3,4)" in parser.format_help() and "(default: 10)" in parser.format_help()
    parsed = from_args(Saliency, parser.parse_args(["--layers", "1", "--no-keep"]))
    assert parsed == Saliency(layers=(1,), patch=10, keep=False)

    @dataclass(frozen=True)
    class Unclear:
        keep: bool = option(True, "keep")

    with pytest.raises(TypeError, match="clears it"):
        add_flags(argparse.ArgumentParser(), Unclear)
