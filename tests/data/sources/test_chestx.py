"""ChestX-ray14 source: the 7-class single-finding filter, split-then-filter, image nesting."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.chestx import (
    CSV_2020_NAME,
    CSV_NAME,
    HEADER_LINE,
    SPECS,
    filter_counts,
    read_chestx,
)
from medtransfer.data.synth.chestx import synth_chestx
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.errors import DatasetError

SPEC = SPECS[0]
# The original's map, copied from its loader (docs/original-study.md#dataset-chestx).
ORIGINAL_MAP = {
    "Atelectasis": 0,
    "Cardiomegaly": 1,
    "Effusion": 2,
    "Infiltration": 3,
    "Mass": 4,
    "Nodule": 5,
    "Pneumothorax": 6,
}
USED_LABELS = [*ORIGINAL_MAP, "Pneumonia"]


def _rows(root: Path) -> list[list[str]]:
    """The CSV's data rows as fields (the header line is dropped)."""
    return [line.split(",") for line in (root / CSV_NAME).read_text().splitlines()[1:]]


def _edit(root: Path, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
    rows = edit(_rows(root))
    lines = [HEADER_LINE, *(",".join(fields) for fields in rows)]
    (root / CSV_NAME).write_text("\n".join(lines) + "\n")


def _set_findings(row: int, value: str) -> Callable[[list[list[str]]], list[list[str]]]:
    def edit(rows: list[list[str]]) -> list[list[str]]:
        rows[row][1] = value
        return rows

    return edit


def _original_kept(part: pd.DataFrame) -> list[tuple[str, int]]:
    """The original loader's filter loop over one split, in its order."""
    kept = []
    for name, label in zip(part[0], part[1], strict=True):
        labels = label.split("|")
        if (
            len(labels) == 1
            and labels[0] != "No Finding"
            and labels[0] != "Pneumonia"
            and labels[0] in USED_LABELS
        ):
            kept.append((name, ORIGINAL_MAP[labels[0]]))
    return kept


@pytest.fixture
def tree(tmp_path: Path, synth_tree: Callable[..., Path]) -> Path:
    return synth_tree(SPEC, tmp_path, per_class=4, size=16, seed=5)


# --- the synthetic tree ----------------------------------------------------------------------


def test_synthetic_tree_has_the_published_layout_classes_and_patients(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    text = (tree / CSV_NAME).read_text().splitlines()
    assert text[0] == HEADER_LINE
    names = [fields[0] for fields in _rows(tree)]
    assert all((tree / "images" / name).is_file() for name in names)
    assert all(len(fields) == 12 and fields[-1] == "" for fields in _rows(tree))

    manifest = manifest_of(SPEC, tree)
    assert manifest.class_names == (
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumothorax",
    )
    assert manifest.table["label"].value_counts().sort_index().tolist() == [4] * 7
    assert manifest.table["path"].str.fullmatch(r"images/\d{8}_\d{3}\.png").all()
    assert (manifest.table["patient"] == manifest.table["path"].str[7:15]).all()
    assert manifest.table["patient"].value_counts().max() >= 2
    assert manifest.problems == ()


def test_filtered_rows_are_counted_not_reported(tree: Path) -> None:
    counts = filter_counts(tree)
    assert counts["rows"] == len(_rows(tree))
    assert counts["kept"] == 28 and all(counts[name] == 4 for name in SPEC.class_names)
    for reason in ("multi_label", "no_finding", "pneumonia", "other_finding"):
        assert counts[reason] >= 1, reason
    assert counts["unknown"] == 0
    assert (
        sum(counts[c] for c in ("kept", "multi_label", "no_finding", "pneumonia"))
        + counts["other_finding"]
        == counts["rows"]
    )


def test_synthetic_images_decode_to_rgb(tree: Path) -> None:
    modes = set()
    for fields in _rows(tree):
        with Image.open(tree / "images" / fields[0]) as raw:
            modes.add(raw.mode)
            assert raw.format == "PNG"
        image = load_image(tree / "images" / fields[0])
        assert image.mode == "RGB" and image.size == (16, 16)
    assert modes == {"L", "RGBA"}


# --- splits ----------------------------------------------------------------------------------


def test_original_split_shuffles_all_rows_then_filters(
    tmp_path: Path, manifest_of: Callable[..., Manifest]
) -> None:
    root = tmp_path / "chestx"
    synth_chestx(root, SynthOptions(per_class=6, size=16, seed=11))
    # The original: skip the header, shuffle every row with seed 42, cut at floor(0.8 N),
    # then keep the single-finding rows of each split in shuffled order.
    info = pd.read_csv(root / CSV_NAME, skiprows=[0], header=None)
    info = info.sample(frac=1, random_state=42).reset_index(drop=True)
    cut = math.floor(0.8 * len(info))
    train, test = _original_kept(info.iloc[:cut]), _original_kept(info.iloc[cut:])
    positions = np.arange(len(train))
    np.random.RandomState(0).shuffle(positions)
    val = {train[i][0] for i in positions[: math.floor(0.2 * len(train))]}

    table = manifest_of(SPEC, root, split_policy="original").table
    names = table["path"].str.removeprefix("images/")
    by_split = {s: set(names[table["split"] == s]) for s in ("train", "val", "test")}
    assert by_split["test"] == {name for name, _ in test}
    assert by_split["val"] == val
    assert by_split["train"] == {name for name, _ in train} - val
    assert dict(zip(names, table["label"], strict=True)) == dict(train + test)
    source = read_chestx(root).table
    order = source[source["original_split"] == "train"].sort_values("original_order")
    assert order["path"].str.removeprefix("images/").tolist() == [name for name, _ in train]


def test_patient_split_never_puts_a_patient_on_two_sides(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    for seed in range(6):
        table = manifest_of(SPEC, tree, seed=seed, test_fraction=0.3, val_fraction=0.3).table
        assert (table.groupby("patient")["split"].nunique() == 1).all()
        assert {"train", "test"} <= set(table["split"])


def test_patient_falls_back_to_the_file_name_prefix(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    before = manifest_of(SPEC, tree).table
    _edit(tree, lambda rows: [[*r[:3], "", *r[4:]] for r in rows])
    pd.testing.assert_frame_equal(manifest_of(SPEC, tree).table, before)


def test_patient_id_disagreeing_with_the_file_name_is_a_problem(tree: Path) -> None:
    rows = _rows(tree)
    row = next(i for i, r in enumerate(rows) if r[1] == "Mass")
    _edit(
        tree,
        lambda rows: [r if i != row else [*r[:3], "99999", *r[4:]] for i, r in enumerate(rows)],
    )
    problems = [p for p in read_chestx(tree).problems if p.kind == "patient-mismatch"]
    assert [p.file for p in problems] == [f"{CSV_NAME} row {row + 2}"]


def test_only_single_finding_rows_of_a_long_csv_are_kept(tmp_path: Path) -> None:
    """Rows of 5 kinds in turn: of 1,000 rows the 400 with one used finding are kept.
    (The reading time of the full 112,120-row CSV is in benchmarks/datasets.py.)"""
    root = tmp_path / "chestx"
    (root / "images").mkdir(parents=True)
    n = 1_000
    findings = np.array(["Effusion", "No Finding", "Mass|Nodule", "Atelectasis", "Hernia"])
    lines = [HEADER_LINE] + [
        f"{i // 4 + 1:08d}_{i % 4:03d}.png,{findings[i % 5]},{i % 4},{i // 4 + 1},"
        "50,M,PA,2500,2048,0.143,0.143,"
        for i in range(n)
    ]
    (root / CSV_NAME).write_text("\n".join(lines) + "\n")
    Image.new("L", (4, 4)).save(root / "images" / "00000001_000.png")
    table = read_chestx(root).table
    assert len(table) == 2 * n // 5
    assert table["path"].iloc[0] == "images/00000001_000.png"


# --- image nesting ---------------------------------------------------------------------------


def _nest(root: Path) -> None:
    """Move images/ into the NIH/Kaggle images_001/images, images_002/images folders."""
    names = sorted(p.name for p in (root / "images").iterdir())
    for i, name in enumerate(names):
        folder = root / f"images_{1 + i * 2 // len(names):03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(root / "images" / name, folder / name)
    (root / "images").rmdir()


def test_nih_kaggle_nesting_is_read_as_it_is(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    before = manifest_of(SPEC, tree, split_policy="original").table
    _nest(tree)
    after = manifest_of(SPEC, tree, split_policy="original").table
    assert after["path"].str.fullmatch(r"images_00[12]/images/\d{8}_\d{3}\.png").all()
    assert all((tree / p).is_file() for p in after["path"])
    pd.testing.assert_series_equal(
        after["path"].str.rsplit("/", n=1).str[-1].astype(str),
        before["path"].str.removeprefix("images/").astype(str),
    )
    pd.testing.assert_frame_equal(after.drop(columns="path"), before.drop(columns="path"))


def test_nested_image_missing_is_a_problem_and_the_row_leaves(tree: Path) -> None:
    _nest(tree)
    rows = _rows(tree)
    row = next(i for i, r in enumerate(rows) if r[1] == "Effusion")
    next(tree.glob(f"images_*/images/{rows[row][0]}")).unlink()
    source = read_chestx(tree)
    assert [p.file for p in source.problems if p.kind == "missing-file"] == [
        f"{CSV_NAME} row {row + 2}"
    ]
    assert not source.table["path"].str.endswith(rows[row][0]).any()


def test_missing_image_folder_is_an_error(tree: Path) -> None:
    shutil.rmtree(tree / "images")
    with pytest.raises(DatasetError, match=r"images not found.*datasets synth --dataset chestx"):
        read_chestx(tree)


def test_images_one_level_too_deep_in_images(tree: Path) -> None:
    shutil.move(tree / "images", tree / "inner")
    (tree / "images").mkdir()
    shutil.move(tree / "inner", tree / "images" / "images")
    with pytest.raises(DatasetError, match="too deep"):
        read_chestx(tree)


def test_kaggle_folders_inside_images_ask_to_flatten(tree: Path) -> None:
    shutil.move(tree / "images", tree / "inner")
    (tree / "images").mkdir()
    shutil.move(tree / "inner", tree / "images" / "images_001")
    with pytest.raises(DatasetError, match=r"images_001.*flatten"):
        read_chestx(tree)


def test_whole_dataset_one_level_too_deep(tree: Path) -> None:
    (tree / "archive").mkdir()
    shutil.move(tree / "images", tree / "archive" / "images")
    with pytest.raises(DatasetError, match=r"archive.*too deep"):
        read_chestx(tree)


# --- bad index file --------------------------------------------------------------------------


def test_missing_csv_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "chestx" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"Data_Entry_2017\.csv not found"):
        read_chestx(tmp_path / "chestx")


def test_the_2020_csv_is_read_with_a_problem(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    before = manifest_of(SPEC, tree).table
    shutil.move(tree / CSV_NAME, tree / CSV_2020_NAME)
    source = read_chestx(tree)
    assert [p.kind for p in source.problems] == ["layout"]
    assert source.table["path"].tolist() == before["path"].tolist()


def test_missing_column_is_named(tree: Path) -> None:
    text = (tree / CSV_NAME).read_text().replace("Finding Labels", "Findings", 1)
    (tree / CSV_NAME).write_text(text)
    with pytest.raises(DatasetError, match="'Finding Labels'"):
        read_chestx(tree)


def test_unknown_finding_is_a_problem_naming_the_row(tree: Path) -> None:
    _edit(tree, _set_findings(2, "effusion"))
    _edit(tree, _set_findings(4, "Mass|Tumour"))
    problems = [p for p in read_chestx(tree).problems if p.kind == "unknown-label"]
    assert [p.file for p in problems] == [f"{CSV_NAME} row 4", f"{CSV_NAME} row 6"]
    assert "did you mean 'Effusion'" in problems[0].detail
    assert "Tumour" in problems[1].detail


def test_duplicated_image_is_a_problem(tree: Path) -> None:
    _edit(tree, lambda rows: [*rows, rows[0]])
    problems = [p for p in read_chestx(tree).problems if p.kind == "duplicate"]
    assert len(problems) == 1
    assert problems[0].file == f"{CSV_NAME} row {len(_rows(tree)) + 1}"
    assert "row 2" in problems[0].detail


def test_empty_class_is_a_problem(tree: Path) -> None:
    _edit(
        tree, lambda rows: [[r[0], "No Finding" if r[1] == "Mass" else r[1], *r[2:]] for r in rows]
    )
    problems = [p for p in read_chestx(tree).problems if p.kind == "empty-class"]
    assert len(problems) == 1 and "'Mass'" in problems[0].detail


def test_empty_images_folder_beside_the_kaggle_folders(tree: Path) -> None:
    _nest(tree)
    (tree / "images").mkdir()
    with pytest.raises(DatasetError, match="remove the empty"):
        read_chestx(tree)
