"""What a run says about itself: the policies in force (printed and recorded), where its
pixels came from, its label and weights; and what it refuses before any forward pass."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from medtransfer.cli import main
from medtransfer.config import Roots
from medtransfer.errors import ConfigError, ProtocolError
from medtransfer.fsutil import sha256_file
from medtransfer.jobs.fewshot import FewShotOptions, run_few_shot
from medtransfer.jobs.finetune import FinetuneOptions, run_finetune
from medtransfer.jobs.knn import KnnOptions, run_knn
from medtransfer.jobs.linear import LinearOptions, run_linear
from medtransfer.jobs.options import DataOptions, ModelOptions
from medtransfer.jobs.registry import JOBS, get_job
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines

SHENZHEN = DataOptions("shenzhencxr")


@pytest.fixture
def no_forward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any feature extraction or model loading fails the test."""
    from medtransfer.jobs import common

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(common, "get_features", refuse)
    monkeypatch.setattr(common, "load_model", refuse)


def test_argument_errors_that_depend_on_the_manifest_come_first(
    job_roots: Roots, no_forward_pass: None
) -> None:
    few = FewShotOptions(n_way=5, n_support=2, n_query=2, iter_num=5, image_size=SIZE)
    with pytest.raises(ProtocolError, match="--n-way 5 needs 5 classes but the pool"):
        run_few_shot(job_roots, SHENZHEN, MODEL, few, RUN)
    short = dataclasses.replace(few, n_way=2, n_support=10, n_query=5)
    with pytest.raises(ProtocolError, match=r"normal: 12, tuberculosis: 12"):
        run_few_shot(job_roots, SHENZHEN, MODEL, short, RUN)
    with pytest.raises(ProtocolError, match=r"Every --k .* is above the 18 voting rows"):
        run_knn(job_roots, SHENZHEN, MODEL, KnnOptions(ks=(50, 60), image_size=SIZE), RUN)
    no_val = DataOptions("shenzhencxr", val_fraction=0.0)
    with pytest.raises(ProtocolError, match="validation split"):
        run_linear(job_roots, no_val, MODEL, LinearOptions(image_size=SIZE), RUN)
    early = FinetuneOptions(steps=1, image_size=SIZE, early_stopping=True)
    with pytest.raises(ProtocolError, match="--early-stopping needs a validation split"):
        run_finetune(job_roots, no_val, MODEL, early, RUN)
    with pytest.raises(ConfigError, match="--label supervised_r18 names a catalog model"):
        run_knn(job_roots, SHENZHEN, ModelOptions("random_r18", label="supervised_r18"),
                KnnOptions(image_size=SIZE), RUN)  # fmt: skip


def test_knn_drops_k_above_the_voting_rows_and_says_so(job_roots: Roots) -> None:
    result = run_knn(job_roots, SHENZHEN, MODEL, KnnOptions(ks=(3, 500), image_size=SIZE), RUN)
    assert [line.split(":")[0] for line in result.lines] == ["k=3"]
    assert result.record["ks_dropped"] == [500] and result.record["params"]["ks"] == [3]
    assert "k: k=500 dropped: above the 18 voting rows" in " ".join(result.notes)
    assert result.record["policies"]["k"].startswith("k=500 dropped")


def test_linear_prints_and_logs_C_in_scientific_notation(job_roots: Roots) -> None:
    result = run_linear(
        job_roots, SHENZHEN, MODEL, LinearOptions(grid_size=4, image_size=SIZE), RUN
    )
    assert result.lines[0].endswith(f"C: {result.record['chosen_C']:.3e}")
    curve = [line for line in log_lines(result.record_path) if line.startswith("Accuracy on val")]
    assert [line.rsplit(" ", 1)[1] for line in curve] == [
        "1.000e+06",
        "2.154e+02",
        "4.642e-02",
        "1.000e-05",
    ]


def test_each_run_says_which_geometry_and_why_the_other_protocol_extracts_again(
    job_roots: Roots,
) -> None:
    few = run_few_shot(
        job_roots, SHENZHEN, MODEL,
        FewShotOptions(n_way=2, n_support=3, n_query=3, iter_num=5, image_size=SIZE), RUN,
    )  # fmt: skip
    knn = run_knn(job_roots, SHENZHEN, MODEL, KnnOptions(ks=(3,), image_size=SIZE), RUN)
    assert few.record["feature_key"] != knn.record["feature_key"]
    assert few.record["policies"]["resize"].startswith("square: 36x36 bilinear")
    assert "features are extracted separately" in few.record["policies"]["resize"]
    assert knn.record["policies"]["resize"].startswith("shorter side to 32 bicubic")
    assert "few-shot on shenzhencxr resizes square" in knn.record["policies"]["resize"]
    assert few.record["policies"]["pool"].startswith("episodes drawn from every image")
    assert few.notes == [f"{k}: {v}" for k, v in few.record["policies"].items()]


def test_prepared_copies_are_named_in_the_record_and_the_printed_lines(
    job_roots: Roots, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = [
        *("--data-root", str(job_roots.data), "--cache-dir", str(job_roots.cache)),
        *("--results-dir", str(job_roots.results)),
    ]
    prepare = ["datasets", "prepare", "-d", "montgomerycxr", "--size", "40", "--no-progress"]
    assert main([*roots, *prepare]) == 0
    knn = ["knn", "-d", "montgomerycxr", "-m", "random_r18", "--k", "3", "-i", str(SIZE)]
    knn += ["--device", "cpu", "--no-progress", "--bootstrap", "0"]
    capsys.readouterr()
    assert main([*roots, *knn]) == 0
    out = capsys.readouterr().out
    assert "pixels: pre-resized copies (`datasets prepare`, shorter side 40 px)" in out
    record = json.loads(Path(out.strip().splitlines()[-1].removeprefix("record: ")).read_text())
    assert record["params"]["pixels"] == {"pixels": "prepared", "size": 40}
    assert main([*roots, *knn, "--no-prepared"]) == 0
    assert "pixels: the original files" in capsys.readouterr().out


def test_finetuning_reads_the_originals_unless_the_copies_fit_its_crops(job_roots: Roots) -> None:
    """32-px crops at scale 0.08 need a 131-px shorter side: a 40-px copy would enlarge
    every crop, so fine-tuning reads the original files and says why; a 160-px copy
    (the synthetic images are smaller, kept as they are) is used."""
    data = DataOptions("montgomerycxr")
    options = FinetuneOptions(steps=1, image_size=SIZE, bootstrap=0)
    run = dataclasses.replace(RUN, batch_size=8)
    args = ["datasets", "prepare", "-d", "montgomerycxr", "--no-progress"]
    roots = ["--data-root", str(job_roots.data), "--cache-dir", str(job_roots.cache)]
    assert main([*roots, *args, "--size", "40"]) == 0
    small = run_finetune(job_roots, data, MODEL, options, run)
    pixels = small.record["params"]["pixels"]
    assert pixels["pixels"] == "original" and pixels["needed_side"] == 131
    assert "(40 px) are smaller than the 131 px" in pixels["reason"]
    assert small.notes[-1].startswith("pixels: the original files (the pre-resized copies")
    assert main([*roots, *args, "--size", "160"]) == 0
    large = run_finetune(job_roots, data, MODEL, options, run)
    assert large.record["params"]["pixels"] == {
        "pixels": "prepared",
        "size": 160,
        "needed_side": 131,
    }


def test_a_weights_file_is_filed_under_its_label_with_its_path_and_hash(
    job_roots: Roots, tmp_path: Path
) -> None:
    trunk = ModelOptions("random_r18", model_seed=5).load(job_roots, progress=False).trunk
    weights = tmp_path / "ckpt.pt"
    torch.save(trunk.state_dict(), weights)
    options = KnnOptions(ks=(3,), image_size=SIZE, bootstrap=0)
    baseline = run_knn(job_roots, SHENZHEN, MODEL, options, RUN)
    tuned = run_knn(job_roots, SHENZHEN, ModelOptions("random_r18", weights=weights), options, RUN)
    assert baseline.record["label"] == "random_r18" and baseline.record["weights_file"] is None
    assert tuned.record["label"] == "random_r18@ckpt"
    assert tuned.record["weights_file"] == {
        "path": str(weights.resolve()),
        "sha256": sha256_file(weights),
    }
    assert tuned.record["weights_sha256"] == sha256_file(weights)
    assert tuned.record["params"]["weights"] == str(weights.resolve())
    assert baseline.record_path.parent != tuned.record_path.parent
    assert tuned.record_path.parent.parent.name == "random_r18@ckpt"
    named = ModelOptions("random_r18", weights=weights, label="mine")
    assert run_knn(job_roots, SHENZHEN, named, options, RUN).record_path.parts[-3] == "mine"


def test_ichallenge_runs_say_whose_row_order_the_original_split_follows(tmp_path: Path) -> None:
    from medtransfer.data.catalog import get_dataset_spec
    from medtransfer.jobs.policies import row_order_policy

    spec = get_dataset_spec("ichallenge_amd")
    assert "amd_labels.csv (the original's custom CSV) is absent" in row_order_policy(
        spec, tmp_path
    )
    (tmp_path / "amd_labels.csv").write_text("image,label\n")
    assert (
        row_order_policy(spec, tmp_path) == "the order of amd_labels.csv, as the original read it"
    )
    assert row_order_policy(get_dataset_spec("bach"), tmp_path) is None


def test_datasets_check_names_the_label_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["datasets", "synth", "-d", "chexpert", "--out", str(tmp_path / "data")]
    assert main([*args, "--per-class", "3", "--size", "16"]) == 0
    roots = ["--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")]
    check = ["datasets", "check", "-d", "chexpert", "--no-progress"]
    capsys.readouterr()
    main([*roots, *check, "--uncertain", "negative"])
    assert "labels: uncertain (-1) findings count as negative" in capsys.readouterr().out
    assert main([*roots, *check, "--uncertain", "original"]) == 2
    assert "--uncertain original means what the original's protocol did" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name", [job.name for job in JOBS if ModelOptions in job.options]
)  # fmt: skip
def test_every_model_job_refuses_a_bad_label_before_reading_data(
    job_roots: Roots, name: str
) -> None:
    """bach is not under the data root: a job that read the data first would say so."""
    job = get_job(name)
    given = {"dataset": "bach", "model": "random_r18", "label": "supervised_r18"}
    with pytest.raises(ConfigError, match="--label supervised_r18 names a catalog model"):
        job.run(job_roots, *job.resolve(given, "none"))
