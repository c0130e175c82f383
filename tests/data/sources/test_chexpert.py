"""CheXpert source: published layout, Pleural Effusion label policies, the 134,049 cut."""

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
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.chexpert import (
    CHEXPERT_COLUMNS,
    CHEXPERT_TRAIN_ROWS,
    SPECS,
    count_csv_rows,
    original_split_error,
    original_split_possible,
    read_chexpert,
)
from medtransfer.errors import ConfigError, DatasetError

SPEC = SPECS[0]
TOP = "CheXpert-v1.0"


def _raw(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)


def _write(root: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(root / "train.csv", index=False)


@pytest.fixture
def tree(tmp_path: Path, synth_tree: Callable[..., Path]) -> Path:
    return synth_tree(SPEC, tmp_path, per_class=8, size=16, seed=3)


def _big_tree(root: Path, n_rows: int) -> pd.DataFrame:
    """A train.csv of ``n_rows`` rows (Path, Sex, Pleural Effusion only) and empty folders."""
    rows = np.arange(n_rows)
    values = np.array(["1.0", "0.0", "", "-1.0", "0.0"])[rows % 5]
    frame = pd.DataFrame(
        {
            "Path": [
                f"{TOP}/train/patient{i // 3 + 1:05d}/study{i % 3 + 1}/view1_frontal.jpg"
                for i in rows
            ],
            "Sex": "Female",
            "Pleural Effusion": values,
        }
    )
    (root / TOP / "train").mkdir(parents=True)
    _write(root, frame)
    return frame


# --- the synthetic tree ----------------------------------------------------------------------


def test_synthetic_tree_has_the_published_layout_classes_and_patients(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    raw = _raw(tree)
    assert tuple(raw.columns) == CHEXPERT_COLUMNS
    assert (
        raw["Path"]
        .str.match(rf"^{TOP}/train/patient\d{{5}}/study\d+/view\d_(frontal|lateral)\.jpg$")
        .all()
    )
    assert {"-1.0", "", "1.0", "0.0"} <= set(raw["Pleural Effusion"])
    assert (raw["Frontal/Lateral"] == "Lateral").any()

    manifest = manifest_of(SPEC, tree)
    assert manifest.class_names == ("no_effusion", "effusion")
    assert len(manifest) == 16
    assert manifest.table["label"].value_counts().sort_index().tolist() == [8, 8]
    expected_patients = manifest.table["path"].str.split("/").str[2]
    assert (manifest.table["patient"] == expected_patients).all()
    assert manifest.table["patient"].value_counts().max() >= 2
    assert manifest.problems == ()


def test_synthetic_images_decode_to_rgb(tree: Path) -> None:
    for path in _raw(tree)["Path"]:
        with Image.open(tree / path) as raw:
            assert (raw.format, raw.mode) == ("JPEG", "L")
        image = load_image(tree / path)
        assert image.mode == "RGB" and image.size == (16, 16)


# --- label policies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "mapping"),
    [
        ("positive", {"1.0": 1, "-1.0": 1, "0.0": 0, "": 0}),
        ("negative", {"1.0": 1, "-1.0": 0, "0.0": 0, "": 0}),
        ("ignore", {"1.0": 1, "0.0": 0, "": 0}),
    ],
)
def test_uncertain_policy_gives_the_documented_labels(
    tree: Path, policy: str, mapping: dict[str, int], manifest_of: Callable[..., Manifest]
) -> None:
    raw = _raw(tree)
    expected = {
        path: mapping[value]
        for path, value in zip(raw["Path"], raw["Pleural Effusion"], strict=True)
        if value in mapping
    }
    manifest = manifest_of(SPEC, tree, labels=LabelOptions(uncertain=policy))
    got = dict(zip(manifest.table["path"], manifest.table["label"], strict=True))
    assert got == expected
    assert manifest.params["label_policy"] == {"uncertain": policy}


def test_other_pathologies_do_not_change_the_label(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    raw = _raw(tree)
    before = manifest_of(SPEC, tree).table
    raw["Cardiomegaly"] = "1.0"
    raw["No Finding"] = ""
    _write(tree, raw)
    assert manifest_of(SPEC, tree).table["label"].tolist() == before["label"].tolist()


def test_unknown_uncertain_policy_is_a_config_error(tree: Path) -> None:
    with pytest.raises(ConfigError, match="maybe"):
        read_chexpert(tree, LabelOptions(uncertain="maybe"))


# --- splits ----------------------------------------------------------------------------------


def test_patient_split_never_puts_a_patient_on_two_sides(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    for seed in range(6):
        table = manifest_of(SPEC, tree, seed=seed, test_fraction=0.3, val_fraction=0.3).table
        sides = table.groupby("patient")["split"].nunique()
        assert (sides == 1).all()
        assert {"train", "test"} <= set(table["split"])


def test_too_small_csv_marks_every_row_train_and_says_so(tree: Path) -> None:
    table = read_chexpert(tree).table
    assert set(table["original_split"]) == {"train"}
    assert sorted(table["original_order"]) == list(range(len(table)))
    assert count_csv_rows(tree) == 16
    assert not original_split_possible(CHEXPERT_TRAIN_ROWS)
    assert original_split_possible(CHEXPERT_TRAIN_ROWS + 1)
    message = original_split_error(16)
    assert "16" in message and "134049" in message and "--split-policy patient" in message


def test_original_split_is_the_134049_cut_of_the_seed_42_shuffle(
    tmp_path: Path, manifest_of: Callable[..., Manifest]
) -> None:
    root = tmp_path / "chexpert"
    n_rows = CHEXPERT_TRAIN_ROWS + 13
    _big_tree(root, n_rows)
    # The original: read train.csv, shuffle all rows with seed 42, rows [:134049] are train.
    frame = pd.read_csv(root / "train.csv")
    shuffled = frame.sample(frac=1, random_state=42).reset_index(drop=True)
    train, test = shuffled.iloc[:134049], shuffled.iloc[134049:]
    # Its validation hold-out: np.random.seed(0), shuffle the train positions, first 20 %.
    positions = np.arange(len(train))
    np.random.RandomState(0).shuffle(positions)
    val = set(train["Path"].iloc[positions[: math.floor(0.2 * len(train))]])

    table = manifest_of(SPEC, root, split_policy="original").table
    by_split = {name: set(group["path"]) for name, group in table.groupby("split")}
    assert by_split["test"] == set(test["Path"])
    assert by_split["val"] == val
    assert by_split["train"] | by_split["val"] == set(train["Path"])

    # Under `ignore` the uncertain rows leave, and the rest keep the shuffled order.
    table = read_chexpert(root, LabelOptions(uncertain="ignore")).table
    kept_train = train.loc[train["Pleural Effusion"] != -1, "Path"].tolist()
    ours = table[table["original_split"] == "train"].sort_values("original_order")
    assert ours["path"].tolist() == kept_train
    assert ours["original_order"].tolist() == list(range(len(kept_train)))
    assert set(table.loc[table["original_split"] == "test", "path"]) == set(
        test.loc[test["Pleural Effusion"] != -1, "Path"]
    )


# --- bad input -------------------------------------------------------------------------------


def test_missing_csv_names_the_file_and_the_synth_command(tmp_path: Path) -> None:
    (tmp_path / "chexpert").mkdir()
    with pytest.raises(
        DatasetError, match=r"train\.csv not found.*datasets synth --dataset chexpert"
    ):
        read_chexpert(tmp_path / "chexpert")


def test_csv_shipped_inside_the_image_folder_is_found(
    tree: Path, manifest_of: Callable[..., Manifest]
) -> None:
    before = manifest_of(SPEC, tree).table
    shutil.move(tree / "train.csv", tree / TOP / "train.csv")
    after = manifest_of(SPEC, tree).table
    pd.testing.assert_frame_equal(before, after)


def test_missing_column_is_named(tree: Path) -> None:
    _write(tree, _raw(tree).drop(columns=["Pleural Effusion"]))
    with pytest.raises(DatasetError, match="'Pleural Effusion'"):
        read_chexpert(tree)


def test_unknown_label_values_are_problems_and_their_rows_leave(tree: Path) -> None:
    raw = _raw(tree)
    raw.loc[3, "Pleural Effusion"] = "2.0"
    raw.loc[5, "Pleural Effusion"] = "yes"
    _write(tree, raw)
    source = read_chexpert(tree)
    unknown = [p for p in source.problems if p.kind == "unknown-label"]
    assert [p.file for p in unknown] == ["train.csv row 5", "train.csv row 7"]
    assert "'2.0'" in unknown[0].detail and "'yes'" in unknown[1].detail
    assert set(source.table["path"]) == set(raw["Path"]) - {raw.loc[3, "Path"], raw.loc[5, "Path"]}


def test_duplicated_image_is_a_problem(tree: Path) -> None:
    raw = _raw(tree)
    _write(tree, pd.concat([raw, raw.iloc[[2]]], ignore_index=True))
    problems = [p for p in read_chexpert(tree).problems if p.kind == "duplicate"]
    assert len(problems) == 1
    assert problems[0].file == f"train.csv row {len(raw) + 2}"
    assert raw.loc[2, "Path"] in problems[0].detail and "row 4" in problems[0].detail


def test_empty_class_is_a_problem(tree: Path) -> None:
    raw = _raw(tree)
    raw["Pleural Effusion"] = "0.0"
    _write(tree, raw)
    problems = [p for p in read_chexpert(tree).problems if p.kind == "empty-class"]
    assert len(problems) == 1 and "'effusion'" in problems[0].detail


def test_image_tree_one_level_too_shallow(tree: Path) -> None:
    shutil.move(tree / TOP / "train", tree / "train")
    (tree / TOP).rmdir()
    with pytest.raises(DatasetError, match=r"too shallow.*CheXpert-v1\.0"):
        read_chexpert(tree)


def test_image_tree_one_level_too_deep(tree: Path) -> None:
    (tree / "download").mkdir()
    shutil.move(tree / TOP, tree / "download" / TOP)
    with pytest.raises(DatasetError, match=r"download/CheXpert-v1.0 exists.*too deep"):
        read_chexpert(tree)


def test_image_tree_unpacked_into_a_folder_of_the_same_name(tree: Path) -> None:
    shutil.move(tree / TOP, tree / "tmp")
    (tree / TOP).mkdir()
    shutil.move(tree / "tmp", tree / TOP / TOP)
    with pytest.raises(DatasetError, match="too deep"):
        read_chexpert(tree)


def test_csv_for_the_other_release_is_named(tree: Path) -> None:
    shutil.move(tree / TOP, tree / f"{TOP}-small")
    with pytest.raises(DatasetError, match=r"CheXpert-v1\.0-small"):
        read_chexpert(tree)
