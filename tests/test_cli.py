"""End to end through the command line, on synthetic trees in the published layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtransfer.cli import main
from medtransfer.features import store

FEW_SHOT = [
    "few-shot",
    "--model",
    "random_r18",
    "--n-way",
    "2",
    "--n-support",
    "5",
    "--n-query",
    "5",
    "--iter-num",
    "40",
    "--image-size",
    "32",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name in ("shenzhencxr", "montgomerycxr"):
        args = ["datasets", "synth", "--dataset", name, "--out", str(root)]
        assert main([*args, "--per-class", "12", "--size", "48"]) == 0
    return root


def _record_path(output: str) -> Path:
    last = output.strip().splitlines()[-1]
    assert last.startswith("record: ")
    return Path(last.removeprefix("record: "))


def test_few_shot_twice_second_run_does_no_forward_pass(
    data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--data-root", str(data_root), *FEW_SHOT, "--dataset", "shenzhencxr"]
    assert main(args) == 0
    first_out = capsys.readouterr().out
    assert "Test Acc = " in first_out and "extracted now" in first_out
    first = json.loads(_record_path(first_out).read_text())

    def no_forward(*_args, **_kwargs):
        raise AssertionError("the second run must not run the backbone")

    monkeypatch.setattr(store, "extract", no_forward)
    assert main(args) == 0
    second_out = capsys.readouterr().out
    assert "read from the feature store" in second_out
    second = json.loads(_record_path(second_out).read_text())
    assert second["features_extracted"] is False
    assert second["metrics"] == first["metrics"]
    assert first["protocol"] == "few-shot" and first["model"] == "random_r18"
    assert first["dataset"] == "shenzhencxr"
    assert first["params"]["split_policy"] == "patient"
    assert first["params"]["n_support"] == 5
    assert len(first["weights_sha256"]) == 64 and len(first["manifest_hash"]) == 64
    assert 0 <= first["metrics"]["accuracy"] <= 100 and first["metrics"]["accuracy_ci95"] >= 0
    log = _record_path(second_out).with_suffix(".log").read_text()
    assert "Test Acc = " in log


def test_few_shot_on_montgomery_16bit_with_original_split(
    data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data-root", str(data_root), *FEW_SHOT, "--dataset", "montgomery"]
    assert main([*args, "--split-policy", "original"]) == 0
    record = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert record["dataset"] == "montgomerycxr"
    assert record["params"]["split_policy"] == "original"


def test_roots_flags_after_the_command(data_root: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "elsewhere"
    args = [*FEW_SHOT, "--dataset", "shenzhencxr", "--data-root", str(data_root)]
    assert main([*args, "--results-dir", str(results)]) == 0
    assert _record_path(capsys.readouterr().out).is_relative_to(results)


def test_datasets_check_names_every_bad_file(data_root: Path, capsys) -> None:
    images = data_root / "shenzhencxr" / "ChinaSet_AllFiles" / "CXR_png"
    files = sorted(images.glob("*.png"))
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:100])
    code = main(["--data-root", str(data_root), "datasets", "check", "-d", "shenzhen"])
    out = capsys.readouterr().out
    assert code == 1
    assert "missing-file" in out and files[0].name in out
    assert "unreadable-image" in out and files[1].name in out
    assert "normal" in out and "tuberculosis" in out and "train" in out


def test_datasets_check_clean_tree(data_root: Path, capsys) -> None:
    assert main(["--data-root", str(data_root), "datasets", "check", "-d", "montgomerycxr"]) == 0
    assert "No problems found." in capsys.readouterr().out


def test_datasets_list_says_which_have_patient_ids(capsys) -> None:
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "shenzhencxr" in out and "montgomerycxr" in out and "patient" in out


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--dataset", "shenzen"], "shenzen"),
        (["--dataset", "shenzhencxr", "--model", "resnet-9000"], "resnet-9000"),
    ],
)
def test_unknown_names_exit_2_and_name_the_culprit(
    data_root: Path, capsys, args: list[str], culprit: str
) -> None:
    base = ["--data-root", str(data_root), *FEW_SHOT]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert culprit in err and "error" in err


def test_corrupt_image_in_few_shot_names_the_file(data_root: Path, capsys) -> None:
    images = data_root / "montgomerycxr" / "MontgomerySet" / "CXR_png"
    victim = sorted(images.glob("*.png"))[3]
    victim.write_bytes(b"not a png at all")
    assert main(["--data-root", str(data_root), *FEW_SHOT, "--dataset", "montgomerycxr"]) == 2
    assert victim.name in capsys.readouterr().err


def test_prepare_then_few_shot_reads_the_copy(data_root: Path, capsys) -> None:
    base = ["--data-root", str(data_root)]
    assert main([*base, "datasets", "prepare", "-d", "shenzhencxr", "--size", "40"]) == 0
    assert "24 written now" in capsys.readouterr().out
    assert main([*base, *FEW_SHOT, "--dataset", "shenzhencxr"]) == 0  # 32 px: 1.15*32 <= 40
    record = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert record["params"]["pixels"] == {"pixels": "prepared", "size": 40}
    assert main([*base, *FEW_SHOT, "--dataset", "shenzhencxr", "--no-prepared"]) == 0
    original = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert original["params"]["pixels"] == {"pixels": "original"}
    assert original["feature_key"] != record["feature_key"]


def test_export_writes_the_manifest(data_root: Path, tmp_path: Path, capsys) -> None:
    import pandas as pd

    out = tmp_path / "split.csv"
    args = ["--data-root", str(data_root), "datasets", "export", "-d", "montgomery"]
    assert main([*args, "--split-policy", "original", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "label", "class_name", "patient", "split"]
    assert len(frame) == 24 and set(frame["split"]) == {"train", "val", "test"}
    assert (out.parent / frame["path"][0]).is_file()  # relative to the CSV's folder
    assert str(out) in capsys.readouterr().out


def test_datasets_check_finds_duplicated_image_content(data_root: Path, capsys) -> None:
    images = data_root / "montgomerycxr" / "MontgomerySet" / "CXR_png"
    files = sorted(images.glob("*.png"))
    files[5].write_bytes(files[2].read_bytes())
    assert main(["--data-root", str(data_root), "datasets", "check", "-d", "montgomery"]) == 1
    out = capsys.readouterr().out
    assert "duplicate" in out and files[5].name in out and files[2].name in out


def test_knn_end_to_end_reuses_few_shot_features(data_root: Path, capsys) -> None:
    base = ["--data-root", str(data_root)]
    common = ["-d", "montgomerycxr", "-m", "random_r18", "-i", "32", "--no-progress"]
    assert main([*base, "knn", *common, "--k", "1,5", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "k=1: accuracy" in out and "k=5: accuracy" in out and "95% CI" in out
    record = json.loads(_record_path(out).read_text())
    assert record["protocol"] == "knn" and record["params"]["ks"] == [1, 5]
    low, high = record["metrics"]["k5_accuracy_ci"]
    assert low <= record["metrics"]["k5_accuracy"] <= high
    assert "k5_auc" in record["metrics"] and "k5_balanced_accuracy" in record["metrics"]
    assert main([*base, "knn", *common, "--k", "3", "--bootstrap", "10"]) == 0
    again = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert again["features_extracted"] is False


def test_knn_bad_k_names_the_flag(data_root: Path, capsys) -> None:
    args = ["--data-root", str(data_root), "knn", "-d", "montgomerycxr", "-m", "random_r18"]
    assert main([*args, "--k", "five"]) == 2
    assert "--k" in capsys.readouterr().err


def test_finetune_end_to_end_with_early_stopping_and_seeds(data_root: Path, capsys) -> None:
    args = [
        *("--data-root", str(data_root), "finetune", "-d", "montgomerycxr", "-m", "random_r18"),
        *("--steps", "6", "--eval-every", "2", "--batch-size", "8", "-i", "32", "--no-progress"),
        *("--early-stopping", "--seeds", "0,1", "--bootstrap", "20", "--device", "cpu"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "seed 0: test accuracy" in out and "over 2 seeds" in out
    record = json.loads(_record_path(out).read_text())
    assert record["protocol"] == "finetune" and record["params"]["early_stopping"] is True
    assert [s["seed"] for s in record["per_seed"]] == [0, 1]
    assert all(s["tested"] == "best" for s in record["per_seed"])
    assert record["metrics"]["accuracy_spread"]["n"] == 2
    assert "auc" in record["metrics"]  # binary task: AUC from probabilities
    assert main(args) == 0  # a re-run resumes from the finished checkpoints
    again = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert [s["resumed_from"] for s in again["per_seed"]] == [6, 6]
    assert again["metrics"]["accuracy"] == record["metrics"]["accuracy"]


@pytest.mark.parametrize("solver", ["torch", "sklearn"])
def test_linear_end_to_end(data_root: Path, capsys, solver: str) -> None:
    args = [
        *("--data-root", str(data_root), "linear", "-d", "montgomerycxr", "-m", "random_r18"),
        *("-i", "32", "--no-progress", "--solver", solver, "--bootstrap", "20", "-w", "9"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Final accuracy for random_r18 on montgomerycxr" in out and "hyperparameter C" in out
    record = json.loads(_record_path(out).read_text())
    assert record["protocol"] == "linear" and record["params"]["solver"] == solver
    assert len(record["val_curve"]) == 9 and record["chosen_C"] in [
        c for c, _ in record["val_curve"]
    ]
    low, high = record["metrics"]["accuracy_ci"]
    assert low <= record["metrics"]["accuracy"] <= high
    assert "auc" in record["metrics"] and "balanced_accuracy" in record["metrics"]
    log = _record_path(out).with_suffix(".log").read_text()
    assert log.count("Accuracy on val set") == 9


def test_linear_fixed_c_skips_validation(data_root: Path, capsys) -> None:
    args = ["--data-root", str(data_root), "linear", "-d", "shenzhencxr", "-m", "random_r18"]
    assert main([*args, "-i", "32", "--no-progress", "--C", "0.5", "--bootstrap", "10"]) == 0
    record = json.loads(_record_path(capsys.readouterr().out).read_text())
    assert record["chosen_C"] == 0.5 and record["val_curve"] == []


def test_linear_seeds_redraw_validation_and_record_spread(data_root: Path, capsys) -> None:
    args = ["--data-root", str(data_root), "linear", "-d", "shenzhencxr", "-m", "random_r18"]
    extra = ["-i", "32", "--no-progress", "-w", "5", "--bootstrap", "10", "--seeds", "0,1,2"]
    assert main([*args, *extra]) == 0
    out = capsys.readouterr().out
    assert "[val seed 2]" in out and "over 3 validation draws" in out
    record = json.loads(_record_path(out).read_text())
    assert [s["val_seed"] for s in record["per_seed"]] == [0, 1, 2]
    assert record["metrics"]["accuracy_spread"]["n"] == 3
    assert record["features_extracted"] is True  # one extraction served every seed


def test_few_shot_seeds_record_mean_and_spread(data_root: Path, capsys) -> None:
    args = ["--data-root", str(data_root), *FEW_SHOT, "--dataset", "shenzhencxr"]
    assert main([*args, "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "[seed 1] Test Acc = " in out and "over 2 episode seeds" in out
    record = json.loads(_record_path(out).read_text())
    assert record["metrics"]["accuracy_spread"]["n"] == 2
    assert [s["seed"] for s in record["per_seed"]] == [0, 1]
