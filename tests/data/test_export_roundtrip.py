"""``datasets export`` round-trips: read back as ``csv:``, the same classes (by name), the
same counts per class and split, and an edited split column is honoured, and said so."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.cli import main
from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import build_manifest, split_counts
from medtransfer.errors import DatasetError


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root with a small Shenzhen tree, its manifest exported to another folder)."""
    base = tmp_path_factory.mktemp("export")
    data = base / "data"
    synth = ["datasets", "synth", "-d", "shenzhencxr", "--out", str(data)]
    assert main([*synth, "--per-class", "10", "--size", "24"]) == 0
    out = base / "elsewhere" / "split.csv"
    assert (
        main(["--data-root", str(data), "datasets", "export", "-d", "shenzhen", "--out", str(out)])
        == 0
    )
    return data, out


def _counts(frame: pd.DataFrame) -> dict[tuple[str, str], int]:
    return frame.groupby(["class_name", "split"]).size().to_dict()


def test_read_back_gives_the_same_classes_and_counts(exported: tuple[Path, Path]) -> None:
    data, out = exported
    original = build_manifest(resolve_dataset("shenzhencxr", data))
    back = build_manifest(resolve_dataset(f"csv:{out}", data))
    assert back.class_names == ("normal", "tuberculosis")  # not "0" and "1"
    assert back.params["split_policy"] == "given"
    assert back.params["split_from"] == "the split column of split.csv"
    assert back.params["class_names_from"] == "the class_name column of split.csv"
    assert _counts(back.table) == _counts(original.table)
    assert split_counts(back).equals(split_counts(original))
    assert (back.labels == original.labels).all()
    assert [(back.root / p).resolve() for p in back.table["path"]] == [
        (original.root / p).resolve() for p in original.table["path"]
    ]


def test_moving_rows_between_splits_is_honoured(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = exported
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    moved = frame.index[frame["split"] == "train"][:5]
    frame.loc[moved, "split"] = "test"
    edited = out.parent / "edited.csv"
    frame.to_csv(edited, index=False)
    back = build_manifest(resolve_dataset(f"csv:{edited}", tmp_path))
    assert _counts(back.table) == _counts(frame)
    assert back.table["split"].tolist() == frame["split"].tolist()

    assert main(["datasets", "check", "-d", f"csv:{edited}", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "split policy: given" in printed
    assert "split: as given by the split column of edited.csv" in printed
    assert "class names: from the class_name column of edited.csv" in printed


def test_a_job_records_where_the_split_came_from(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = exported
    args = ["few-shot", "-d", f"csv:{out}", "-m", "random_r18", "-i", "32", "--device", "cpu"]
    fast = ["--n-way", "2", "--n-support", "2", "--n-query", "2", "--iter-num", "5"]
    assert main([*args, *fast, "--no-progress"]) == 0
    record_path = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("record: ")
    record = json.loads(Path(record_path).read_text())
    assert record["params"]["split_policy"] == "given"
    assert record["params"]["split_from"] == "the split column of split.csv"
    assert record["class_names"] == ["normal", "tuberculosis"]


def test_without_val_rows_val_is_cut_from_train(exported: tuple[Path, Path]) -> None:
    _, out = exported
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    frame["split"] = frame["split"].replace({"val": "train"})
    two_way = out.parent / "two-way.csv"
    frame.to_csv(two_way, index=False)
    back = build_manifest(resolve_dataset(f"csv:{two_way}", out.parent))
    test_rows = frame["split"] == "test"
    assert (back.table["split"][test_rows] == "test").all()
    assert set(back.table["split"][~test_rows]) == {"train", "val"}


def test_bad_split_values_and_clashing_names_are_errors_naming_the_row(
    exported: tuple[Path, Path],
) -> None:
    _, out = exported
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    bad = out.parent / "bad.csv"
    frame.assign(split=["validation", *frame["split"][1:]]).to_csv(bad, index=False)
    with pytest.raises(DatasetError, match=r"bad\.csv row 2: split 'validation' is not one of"):
        resolve_dataset(f"csv:{bad}", out.parent)
    clash = frame.copy()
    clash.loc[3, "class_name"] = "tuberculosis" if clash.loc[3, "label"] == "0" else "normal"
    clash.to_csv(bad, index=False)
    with pytest.raises(DatasetError, match=r"goes with more than one .*first at row"):
        resolve_dataset(f"csv:{bad}", out.parent)
    with pytest.raises(DatasetError, match=r"fixes the split.*--split-policy original"):
        build_manifest(resolve_dataset(f"csv:{out}", out.parent), split_policy="original")


def test_a_class_name_column_alone_names_the_classes(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("path,class_name\na.png,cat\nb.png,dog\nc.png,cat\nd.png,\n")
    resolved = resolve_dataset(f"csv:{csv}", tmp_path)
    assert resolved.spec.class_names == ("cat", "dog")
    manifest = build_manifest(resolved)
    assert len(manifest) == 3
    assert [str(p) for p in manifest.problems] == [
        "[unknown-label] labels.csv row 5: class_name is empty — fill it in"
    ]
