"""BACH (ICIAR 2018): header-less ground truth, class folders, problems, synthetic TIFFs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.check import check_manifest
from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.bach import SPECS, read_bach
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.spec import ACCURACY
from medtransfer.errors import DatasetError

SPEC = SPECS[0]
PHOTOS = "ICIAR2018_BACH_Challenge/Photos"
CSV = f"{PHOTOS}/microscopy_ground_truth.csv"


def _ground_truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / CSV, header=None, dtype=str)


def _write_ground_truth(root: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(root / CSV, header=False, index=False)


def test_spec_facts() -> None:
    assert SPEC.name == "bach"
    assert SPEC.class_names == ("normal", "benign", "in_situ", "invasive")
    assert SPEC.metric == ACCURACY
    assert SPEC.patients == ""
    assert SPEC.few_shot_resize == "square"


def test_synthetic_tree_loads_with_classes_and_counts(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=3)
    first_line = (root / CSV).read_text().splitlines()[0]
    assert first_line == "b001.tif,Benign"  # no header row
    manifest = manifest_of(SPEC, root)
    assert manifest.problems == ()
    table = manifest.table
    assert table["label"].value_counts().sort_index().tolist() == [3, 3, 3, 3]
    assert (table["patient"] == "").all()
    folder = table["path"].str.split("/").str[2]
    classes = ("Normal", "Benign", "InSitu", "Invasive")
    assert (folder == table["label"].map(dict(enumerate(classes)))).all()
    assert (
        table["path"]
        .str.match(r"^ICIAR2018_BACH_Challenge/Photos/\w+/(n|b|is|iv)\d{3}\.tif$")
        .all()
    )


def test_synthetic_tiffs_are_8bit_rgb_and_decode(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    for path in manifest_of(SPEC, root).absolute_paths():
        with Image.open(path) as raw:
            assert (raw.format, raw.mode) == ("TIFF", "RGB")
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (24, 24)


def test_original_split_is_the_generic_shuffle_of_the_csv(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=3)
    gt = _ground_truth(root)
    # the original: sample(frac=1, random_state=42) over the CSV's rows, first floor(0.8 N)
    # train, then np.random.seed(0) shuffles train positions; the first floor(0.2 N_train) val
    shuffled = gt.sample(frac=1, random_state=42).reset_index(drop=True)
    n_train = math.floor(0.8 * len(gt))
    indices = list(range(n_train))
    np.random.seed(0)
    np.random.shuffle(indices)
    val = set(shuffled.loc[indices[: math.floor(0.2 * n_train)], 0])
    train = set(shuffled.loc[: n_train - 1, 0]) - val
    test = set(shuffled.loc[n_train:, 0])
    table = manifest_of(SPEC, root, split_policy="original").table
    names = table["path"].str.rsplit("/", n=1).str[1]
    assert set(names[table["split"] == "train"]) == train
    assert set(names[table["split"] == "val"]) == val
    assert set(names[table["split"] == "test"]) == test


def test_bad_rows_are_problems_naming_the_row(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=2)
    gt = _ground_truth(root)
    # rows: b001 b002 is001 is002 iv001 iv002 n001 n002
    gt.loc[1, 1] = "Invasiv"
    gt.loc[2, 1] = "insitu"
    gt.loc[4, 1] = "Normal"  # iv001 called Normal
    gt = pd.concat([gt, gt.iloc[[0]]])
    _write_ground_truth(root, gt)
    source = read_bach(root, LabelOptions())
    found = {(p.kind, p.file): p for p in source.problems}
    assert ("unknown-label", "microscopy_ground_truth.csv row 2 (b002.tif)") in found
    near = found[("unknown-label", "microscopy_ground_truth.csv row 3 (is001.tif)")]
    assert "did you mean 'InSitu'" in near.fix
    assert ("label-mismatch", "microscopy_ground_truth.csv row 5 (iv001.tif)") in found
    assert ("duplicate", "microscopy_ground_truth.csv row 9 (b001.tif)") in found
    names = source.table["path"].str.rsplit("/", n=1).str[1].tolist()
    assert names == ["b001.tif", "is002.tif", "iv001.tif", "iv002.tif", "n001.tif", "n002.tif"]
    assert source.table["path"].iloc[2] == f"{PHOTOS}/Normal/iv001.tif"  # the CSV decides
    # the rows kept keep the split the original gave them over all 9 CSV rows
    full = pd.Series(range(9)).sample(frac=1, random_state=42).tolist()
    expected = ["train" if full.index(i) < 7 else "test" for i in (0, 3, 4, 5, 6, 7)]
    assert source.table["original_split"].tolist() == expected


def test_a_header_row_is_reported_as_such(tmp_path: Path, synth_tree: Callable[..., Path]) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    (root / CSV).write_text("name,label\n" + (root / CSV).read_text())
    source = read_bach(root, LabelOptions())
    [problem] = source.problems
    assert problem.file == "microscopy_ground_truth.csv row 1 (name)"
    assert "no header row" in problem.fix
    assert len(source.table) == 4


def test_empty_class_is_reported_by_check(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    gt = _ground_truth(root)
    _write_ground_truth(root, gt[gt[1] != "InSitu"])
    with pytest.raises(DatasetError, match=r"class 'in_situ' has no image \(ICIAR2018_BACH_Ch"):
        manifest_of(SPEC, root)  # every job refuses it, naming the folder
    problems = check_manifest(manifest_of(SPEC, root, empty_classes="keep"), progress=False)
    assert [p.file for p in problems if p.kind == "empty-class"] == [
        "ICIAR2018_BACH_Challenge/Photos/InSitu/"
    ]
    dropped = manifest_of(SPEC, root, empty_classes="drop")
    assert dropped.class_names == ("normal", "benign", "invasive")
    assert dropped.params["dropped_classes"] == ["in_situ"]


def test_layout_errors_name_the_culprit(tmp_path: Path, synth_tree: Callable[..., Path]) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    (root / CSV).write_text("b001.tif\n")
    with pytest.raises(DatasetError, match=r"microscopy_ground_truth\.csv.*class column"):
        read_bach(root, LabelOptions())
    (root / CSV).unlink()
    with pytest.raises(DatasetError, match=r"microscopy_ground_truth\.csv not found"):
        read_bach(root, LabelOptions())
    # Photos/ directly in the dataset folder
    (root / PHOTOS).rename(root / "Photos")
    with pytest.raises(DatasetError, match=r"too shallow"):
        read_bach(root, LabelOptions())
    # the archive folder twice
    nested = root / "ICIAR2018_BACH_Challenge" / "ICIAR2018_BACH_Challenge"
    nested.mkdir()
    (root / "Photos").rename(nested / "Photos")
    with pytest.raises(DatasetError, match=r"too deep"):
        read_bach(root, LabelOptions())
    with pytest.raises(DatasetError, match=r"Photos not found.*datasets synth"):
        read_bach(tmp_path / "elsewhere", LabelOptions())


@pytest.mark.parametrize("seed", [0, 1])
def test_patient_split_puts_each_image_on_one_side(
    tmp_path: Path, seed: int, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=5)
    table = manifest_of(SPEC, root, seed=seed).table
    assert not table["path"].duplicated().any()
    assert set(table["split"]) == {"train", "val", "test"}
    # stratified: every class is in test
    assert table.loc[table["split"] == "test", "label"].nunique() == 4
