"""The results table: generic metric reading for every protocol's record shape, damaged and
foreign files, newest-per-config, filters, the pivot and the output formats."""

from __future__ import annotations

import builtins
import csv
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.errors import ConfigError
from medtransfer.results.collect import newest_per_config, read_records
from medtransfer.results.table import (
    COLUMNS,
    filter_rows,
    long_table,
    parse_where,
    wide_table,
    write_table,
)
from tests.results.conftest import Sweep, hand_record


def _rows(table: pd.DataFrame, protocol: str) -> dict[str, dict]:
    part = table[table["protocol"] == protocol]
    return {row["metric"]: row for row in part.to_dict("records")}


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """One hand-made record per protocol shape, existing and being built."""
    hand_record(
        tmp_path,
        protocol="few-shot",
        model="moco-v2",
        params={"n_way": 2, "n_support": 20, "precision": "fp32", "label_policy": "original"},
        metrics={"accuracy": 73.76, "accuracy_ci95": 0.66, "accuracy_std": 8.2, "episodes": 600},
        extra={"pool_rows": 662},
    )
    hand_record(
        tmp_path,
        protocol="linear",
        model="supervised_r18",
        dataset="diabetic_retinopathy",
        params={"metric": "mean per-class accuracy", "seeds": [0, 1, 2], "label": "r18@mine"},
        metrics={
            "mean_per_class_accuracy": 31.5,
            "mean_per_class_accuracy_ci": [29.0, 34.0],
            "mean_per_class_accuracy_spread": {
                "mean": 31.5,
                "std": 1,
                "min": 30,
                "max": 33,
                "n": 3,
            },
            "accuracy": 70.1,
            "balanced_accuracy": 31.5,
        },
        extra={"sizes": {"train": 10, "val": 2, "test": 53576}},
    )
    hand_record(
        tmp_path,
        protocol="knn",
        model="byol",
        params={"metric": "accuracy", "ks": [10, 20, 100]},
        metrics={
            "k10_accuracy": 60.0,
            "k10_accuracy_ci": [55.0, 65.0],
            "k100_accuracy": 62.0,
            "k100_accuracy_ci": [57.0, 67.0],
            "k20_accuracy": 61.0,
            "k20_accuracy_ci": [56.0, 66.0],
        },
        extra={"test_rows": 133},
    )
    hand_record(
        tmp_path,
        protocol="finetune",
        model="moco-v2",
        dataset="chexpert",
        params={"metric": "auc", "seeds": None},
        metrics={
            "auc": 79.9,
            "auc_ci": [79.0, 80.8],
            "auc_spread": {"mean": 79.9, "std": 0.4, "min": 79.5, "max": 80.3, "n": 2},
            "accuracy": 80.2,
        },
        extra={"per_seed": [{"seed": 0}, {"seed": 1}], "sizes": {"test": 89365}},
    )
    hand_record(
        tmp_path,
        protocol="saliency",
        model="swav",
        params={"images": 10},
        metrics={
            "attentive_diffusion": 47.5,
            "attentive_diffusion_ci": [44.0, 51.0],
            "per_image": [47.0, 48.0],
        },
    )
    hand_record(
        tmp_path,
        protocol="invariance",
        model="pirl",
        params={"transform": "h_flip", "k": 2},
        metrics={
            "similarity": 0.68,
            "mahalanobis": {"mean": 3.2, "median": 3.0},
            "curve": [[0, 1.0], [1, 0.36]],
        },
    )
    hand_record(
        tmp_path,
        protocol="reconstruction",
        model="byol",
        params={"layer": "layer4"},
        metrics={"final_loss": 0.012, "loss_drop": 0.9},
    )
    hand_record(
        tmp_path,
        protocol="perceptual-distance",
        model="byol",
        metrics={
            "lpips_alex": 0.96,
            "lpips_vgg": 0.84,
            "lpips_squeeze": 0.80,
            "lpips_average": 0.87,
        },
    )
    return tmp_path


def test_metrics_of_every_protocol_shape_are_read_generically(shapes: Path) -> None:
    records, skipped = read_records(shapes)
    assert skipped == [] and len(records) == 8
    table = long_table(records)
    assert list(table.columns) == list(COLUMNS)

    few = _rows(table, "few-shot")
    assert set(few) == {"accuracy", "accuracy_std", "episodes"}
    assert few["accuracy"]["low"] == pytest.approx(73.10) and few["accuracy"]["main"]
    assert few["accuracy"]["variant"] == "n_way=2 n_support=20"
    assert few["accuracy"]["n_eval"] == 662 and few["accuracy"]["precision"] == "fp32"

    linear = _rows(table, "linear")
    main = linear["mean_per_class_accuracy"]
    assert main["main"] and (main["low"], main["high"], main["n_seeds"]) == (29.0, 34.0, 3)
    assert main["label"] == "r18@mine" and main["model"] == "supervised_r18"
    assert linear["accuracy"]["n_seeds"] == 3 and not linear["accuracy"]["main"]
    assert main["n_eval"] == 53576

    finetune = _rows(table, "finetune")
    assert finetune["auc"]["main"] and finetune["auc"]["n_seeds"] == 2
    assert finetune["accuracy"]["n_seeds"] == 2 and finetune["auc"]["n_eval"] == 89365

    knn = _rows(table, "knn")
    assert [m for m, r in knn.items() if r["main"]] == ["k20_accuracy"]  # not k100 (sorted first)

    saliency = _rows(table, "saliency")
    assert set(saliency) == {"attentive_diffusion"} and saliency["attentive_diffusion"]["main"]

    invariance = _rows(table, "invariance")
    assert set(invariance) == {"similarity", "mahalanobis.mean", "mahalanobis.median"}
    assert invariance["similarity"]["main"] and math.isnan(invariance["similarity"]["low"])
    assert invariance["similarity"]["variant"] == "transform=h_flip"

    assert set(_rows(table, "reconstruction")) == {"final_loss", "loss_drop"}
    assert _rows(table, "reconstruction")["final_loss"]["variant"] == "layer=layer4"
    assert len(_rows(table, "perceptual-distance")) == 4


def test_damaged_and_foreign_files_are_listed_and_skipped(shapes: Path) -> None:
    (shapes / "broken.json").write_text('{"schema_version": 1, "proto')
    (shapes / "list.json").write_text("[1, 2]")
    (shapes / "sweep-state.json").write_text('{"cells": 3}')
    (shapes / "future.json").write_text(
        json.dumps(
            {
                "schema_version": 2,
                "protocol": "x",
                "model": "m",
                "dataset": "d",
                "params": {},
                "metrics": {},
                "config_hash": "c",
                "created": "t",
            }
        )
    )
    (shapes / "bytes.json").write_bytes(b"\xff\xfe\x00")
    hidden = shapes / ".partial"
    hidden.mkdir()
    (hidden / "x.json").write_text("{")
    records, skipped = read_records(shapes)
    assert len(records) == 8
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {
        "broken.json",
        "list.json",
        "sweep-state.json",
        "future.json",
        "bytes.json",
    }
    assert reasons["broken.json"].startswith("unreadable JSON")
    assert reasons["list.json"] == "not a JSON object but list"
    assert "not a medtransfer record (no schema_version" in reasons["sweep-state.json"]
    assert "schema_version 2" in reasons["future.json"]


def test_newest_per_config_hash_unless_all(tmp_path: Path) -> None:
    metrics = {"accuracy": 70.0, "accuracy_ci95": 1.0}
    old = hand_record(tmp_path, protocol="few-shot", model="byol", metrics=metrics)
    new = hand_record(
        tmp_path, protocol="few-shot", model="byol", metrics=metrics, created="2026-02-01T00:00:00Z"
    )
    other = hand_record(tmp_path, protocol="few-shot", model="swav", metrics=metrics)
    records, _ = read_records(tmp_path)
    assert {r.path for r in newest_per_config(records)} == {new, other}
    assert {r.path for r in records} == {old, new, other}


def test_where_filters_and_rejects_unknown_columns(shapes: Path) -> None:
    table = long_table(read_records(shapes)[0])
    only = filter_rows(table, parse_where("protocol=knn|saliency,main=true"))
    assert set(only["metric"]) == {"k20_accuracy", "attentive_diffusion"}
    assert parse_where("dataset=chexpert") == {"dataset": ("chexpert",)}
    with pytest.raises(ConfigError, match="no column 'protocl'; columns: label"):
        parse_where("protocl=linear")
    with pytest.raises(ConfigError, match="COLUMN=VALUE"):
        parse_where("protocol")


def test_wide_pivots_main_metrics_and_names_conflicts(tmp_path: Path) -> None:
    for created, value in (("2026-01-01T00:00:00Z", 70.0), ("2026-02-01T00:00:00Z", 72.0)):
        hand_record(
            tmp_path,
            protocol="linear",
            model="byol",
            params={"metric": "accuracy", "C": value},
            metrics={"accuracy": value, "accuracy_ci": [value - 1, value + 1]},
            created=created,
        )
    hand_record(
        tmp_path,
        protocol="linear",
        model="swav",
        params={"metric": "accuracy"},
        metrics={"accuracy": 65.0, "accuracy_ci": [60.0, 70.0]},
    )
    wide = wide_table(long_table(read_records(tmp_path)[0]))
    column = "linear shenzhencxr accuracy"
    assert wide.values.loc["byol", column] == 72.0 and wide.high.loc["swav", column] == 70.0
    assert wide.conflicts == [f"byol / {column}: 2 runs"]


def test_one_label_over_several_weights_is_split_by_their_hash(tmp_path: Path) -> None:
    """Two checkpoints both named best.pt default to one label (supervised_r18@best): the
    table keys each on its weights, never merges them; a label with one hash stays."""
    for sha, value in (("a" * 64, 70.0), ("b" * 64, 60.0)):
        hand_record(
            tmp_path,
            protocol="linear",
            model="supervised_r18",
            params={"metric": "accuracy", "label": "supervised_r18@best"},
            metrics={"accuracy": value},
            weights_sha256=sha,
        )
    for created in ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"):
        hand_record(
            tmp_path,
            protocol="linear",
            model="swav",
            params={"metric": "accuracy"},
            metrics={"accuracy": 65.0},
            created=created,
        )
    table = long_table(read_records(tmp_path)[0])
    assert set(table["label"]) == {
        "supervised_r18@best#aaaaaaaa",
        "supervised_r18@best#bbbbbbbb",
        "swav",
    }
    wide = wide_table(table)
    column = "linear shenzhencxr accuracy"
    assert wide.values.loc["supervised_r18@best#aaaaaaaa", column] == 70.0
    assert wide.values.loc["supervised_r18@best#bbbbbbbb", column] == 60.0
    assert wide.conflicts == [f"swav / {column}: 2 runs"]


def test_formats(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = long_table(read_records(shapes)[0])
    rows = list(csv.DictReader(io.StringIO(write_table(table, "csv", None))))
    assert len(rows) == len(table) and rows[0].keys() == set(COLUMNS)
    text = write_table(table, "markdown", None)
    assert text.count("\n") == len(table) + 2 and "| 73.76 |" in text
    out = tmp_path / "t.parquet"
    write_table(table, "parquet", out)
    assert pd.read_parquet(out).shape == table.shape
    with pytest.raises(ConfigError, match=r"give --out FILE\.parquet"):
        write_table(table, "parquet", None)
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args, **kwargs):
        if name == "pyarrow":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ConfigError, match=r"pip install 'medtransfer\[parquet\]'"):
        write_table(table, "parquet", out)


def test_results_command_on_the_sweep(sweep: Sweep, tmp_path: Path) -> None:
    records, skipped = read_records(sweep.roots.results)
    assert skipped == [] and len(records) == 9  # 3 models x few-shot, linear, kNN
    status, text = sweep.cli("results", "--format", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(long_table(records))
    assert {r["protocol"] for r in rows} == {"few-shot", "linear", "knn"}
    assert {r["label"] for r in rows} == {"random_r18", "random_r50", "efficientnet-lite0"}
    assert all(r["precision"] == "fp32" and r["split_policy"] == "patient" for r in rows)
    assert all(len(r["config_hash"]) == 64 and r["git_commit"] != "" for r in rows)

    status, text = sweep.cli("results", "--where", "protocol=linear,main=true")
    body = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert len(body) == 3 and all("| linear |" in line for line in body)

    status, text = sweep.cli("results", "--wide")
    lines = text.splitlines()
    assert len(lines) == 2 + 3 and "knn shenzhencxr k20_accuracy" in lines[0]

    (sweep.roots.results / "notes.json").write_text("{not json")
    try:
        status, text = sweep.cli("results", "--format", "parquet", "--out", str(tmp_path / "r.pq"))
        assert status == 0 and pd.read_parquet(tmp_path / "r.pq").shape[0] == len(rows)
    finally:
        (sweep.roots.results / "notes.json").unlink()


def test_label_policies_read_as_words() -> None:
    from medtransfer.results.table import label_policy_text

    assert label_policy_text({"uncertain": "negative"}) == "uncertain=negative"
    assert label_policy_text({}) == "" and label_policy_text(None) == ""
    assert label_policy_text("original") == "original"  # records written before the dict


def test_numbers_below_one_keep_four_decimals() -> None:
    from medtransfer.results.table import markdown, number_text

    assert number_text(96.2834) == "96.28" and number_text(-0.013724) == "-0.0137"
    assert (
        number_text(0.0) == "0.00"
        and number_text(0.5, 0) == "0"
        and number_text(0.74, 4) == "0.7400"
    )
    frame = pd.DataFrame({"similarity": [0.061353, 1.5]})
    assert markdown(frame).splitlines()[2:] == ["| 0.0614 |", "| 1.50 |"]
