"""EyePACS / Kaggle DR: layout reading, official split, problems, synthetic tree."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.check import check_manifest
from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.eyepacs import SPECS, read_diabetic_retinopathy
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY
from medtransfer.errors import DatasetError

SPEC = SPECS[0]


def _write_tree(root: Path, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> Path:
    """A label-file-only tree (no images) with the two CSVs and empty image folders."""
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    pd.DataFrame(train, columns=["image", "level"]).to_csv(root / "trainLabels.csv", index=False)
    frame = pd.DataFrame(test, columns=["image", "level"]).assign(Usage="Private")
    frame.to_csv(root / "testLabels.csv", index=False)
    return root


def _eyes(patients: range, levels: list[int]) -> list[tuple[str, str]]:
    rows = [(f"{p}_{eye}", "") for p in patients for eye in ("left", "right")]
    return [(name, str(levels[i % len(levels)])) for i, (name, _) in enumerate(rows)]


def test_spec_facts() -> None:
    assert SPEC.name == "diabetic_retinopathy"
    assert {"eyepacs", "kaggle-dr"} <= set(SPEC.aliases)
    assert SPEC.metric == MEAN_PER_CLASS_ACCURACY
    assert SPEC.few_shot_resize == "shorter"
    assert len(SPEC.class_names) == 5


def test_synthetic_tree_loads_with_classes_counts_and_patients(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=3)
    assert (root / "trainLabels.csv").read_text().splitlines()[0] == "image,level"
    assert (root / "testLabels.csv").read_text().splitlines()[0] == "image,level,Usage"
    usage = pd.read_csv(root / "testLabels.csv")["Usage"]
    assert set(usage) <= {"Public", "Private"}
    manifest = manifest_of(SPEC, root)
    assert manifest.class_names == SPEC.class_names
    assert manifest.problems == ()
    assert manifest.table["label"].value_counts().sort_index().tolist() == [3] * 5
    table = manifest.table
    assert table["path"].str.match(r"^(train|test)/\d+_(left|right)\.jpeg$").all()
    expected_patient = table["path"].str.extract(r"/(\d+)_")[0]
    assert (table["patient"] == expected_patient).all()
    # two eyes per patient (at most one patient per split with a single eye)
    eyes = table.groupby("patient").size()
    assert (eyes == 2).sum() >= len(eyes) - 2
    # Kaggle train and test patients are disjoint
    split_of = table["path"].str.split("/").str[0]
    assert set(table.loc[split_of == "train", "patient"]).isdisjoint(
        table.loc[split_of == "test", "patient"]
    )


def test_synthetic_images_decode_as_rgb(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    for path in manifest_of(SPEC, root).absolute_paths():
        image = load_image(path)
        assert image.mode == "RGB"
        assert image.size == (24, 24)


def test_original_split_is_the_official_one_in_seed_42_order(
    tmp_path: Path, manifest_of: Callable[..., Manifest]
) -> None:
    root = _write_tree(
        tmp_path / "dr", _eyes(range(10, 20), [0, 1, 2, 3, 4]), _eyes(range(1, 4), [0, 2])
    )
    manifest = manifest_of(SPEC, root, split_policy="original")
    table = manifest.table
    # computed independently, as the original did: the train dataframe is shuffled with
    # sample(frac=1, random_state=42); linear/finetune then hold out np.random.seed(0)'s first
    # floor(0.2 * N_train) shuffled positions as validation
    train_csv = pd.read_csv(root / "trainLabels.csv")
    shuffled = train_csv.sample(frac=1, random_state=42).reset_index(drop=True)
    indices = list(range(len(shuffled)))
    np.random.seed(0)
    np.random.shuffle(indices)
    n_val = math.floor(0.2 * len(shuffled))
    val_images = set(shuffled.loc[indices[:n_val], "image"])
    names = table["path"].str.extract(r"/(.+)\.jpeg$")[0]
    assert set(names[table["split"] == "val"]) == val_images
    assert set(names[table["split"] == "train"]) == set(train_csv["image"]) - val_images
    test_csv = pd.read_csv(root / "testLabels.csv")
    assert set(names[table["split"] == "test"]) == set(test_csv["image"])
    assert table.loc[table["split"] == "test", "path"].str.startswith("test/").all()
    # the order recorded per row is the shuffled position, in each file separately
    source = read_diabetic_retinopathy(root, LabelOptions()).table
    train_rows = source[source["original_split"] == "train"]
    by_order = train_rows.sort_values("original_order")["path"].str[6:-5].tolist()
    assert by_order == shuffled["image"].tolist()
    test_rows = source[source["original_split"] == "test"]
    shuffled_test = test_csv.sample(frac=1, random_state=42)["image"].tolist()
    assert test_rows.sort_values("original_order")["path"].str[5:-5].tolist() == shuffled_test


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_patient_split_keeps_both_eyes_together(
    tmp_path: Path, seed: int, manifest_of: Callable[..., Manifest]
) -> None:
    root = _write_tree(
        tmp_path / "dr", _eyes(range(10, 60), [0, 0, 1, 2, 3, 4, 1]), _eyes(range(1, 9), [0, 4])
    )
    manifest = manifest_of(SPEC, root, seed=seed)
    per_patient = manifest.table.groupby("patient")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(manifest.table["split"]) == {"train", "val", "test"}


def test_bad_rows_are_problems_naming_the_row(tmp_path: Path) -> None:
    train = [
        ("10_left", "0"),
        ("10_right", "5"),
        ("11_left", "x"),
        ("11_right", "2.5"),
        ("12_left", "3.0"),
        ("scan7", "1"),
        ("10_left", "0"),
    ]
    root = _write_tree(tmp_path / "dr", train, [("1_left", "4"), ("12_right", "2")])
    source = read_diabetic_retinopathy(root, LabelOptions())
    problems = {(p.kind, p.file) for p in source.problems}
    assert ("unknown-label", "trainLabels.csv row 3 (10_right)") in problems
    assert ("unknown-label", "trainLabels.csv row 4 (11_left)") in problems
    assert ("unknown-label", "trainLabels.csv row 5 (11_right)") in problems
    assert ("bad-name", "trainLabels.csv row 7 (scan7)") in problems
    assert ("duplicate", "trainLabels.csv row 8 (10_left)") in problems
    overlap = [p for p in source.problems if p.kind == "patient-overlap"]
    assert len(overlap) == 1 and "patient 12" in overlap[0].detail
    assert "trainLabels.csv row 6" in overlap[0].file and "testLabels.csv row 3" in overlap[0].file
    table = source.table
    assert table["path"].tolist() == [
        "train/10_left.jpeg",
        "train/12_left.jpeg",
        "train/scan7.jpeg",
        "test/1_left.jpeg",
        "test/12_right.jpeg",
    ]
    assert table["label"].tolist() == [0, 3, 1, 4, 2]
    assert table["patient"].tolist() == ["10", "12", "scan7", "1", "12"]


def test_missing_files_and_columns_are_errors_naming_them(tmp_path: Path) -> None:
    root = tmp_path / "dr"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"trainLabels\.csv not found.*datasets synth"):
        read_diabetic_retinopathy(root, LabelOptions())
    _write_tree(tmp_path / "dr2", [("10_left", "0")], [("1_left", "0")])
    root = tmp_path / "dr2"
    (root / "testLabels.csv").rename(root / "retinopathy_solution.csv")
    with pytest.raises(DatasetError, match=r"testLabels\.csv.*rename it"):
        read_diabetic_retinopathy(root, LabelOptions())
    (root / "retinopathy_solution.csv").rename(root / "testLabels.csv")
    (root / "trainLabels.csv").write_text("image\n10_left\n")
    with pytest.raises(DatasetError, match=r"trainLabels\.csv.*level"):
        read_diabetic_retinopathy(root, LabelOptions())
    (root / "trainLabels.csv").write_text("10_left,0\n10_right,1\n")
    with pytest.raises(DatasetError, match=r"header line image,level"):
        read_diabetic_retinopathy(root, LabelOptions())


def test_wrong_nesting_is_an_error_naming_the_folder(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    # images one level too deep: train/train/<id>.jpeg
    (root / "train").rename(root / "inner")
    (root / "train").mkdir()
    (root / "inner").rename(root / "train" / "train")
    with pytest.raises(DatasetError, match=r"train/train.*too deep"):
        read_diabetic_retinopathy(root, LabelOptions())
    # images directly in the dataset folder
    for path in (root / "train" / "train").iterdir():
        path.rename(root / path.name)
    (root / "train" / "train").rmdir()
    (root / "train").rmdir()
    with pytest.raises(DatasetError, match=r"sub-folder train/"):
        read_diabetic_retinopathy(root, LabelOptions())
    # the whole release one level too deep
    nested = tmp_path / "outer" / "diabetic_retinopathy"
    _write_tree(nested / "kaggle", [("10_left", "0")], [("1_left", "0")])
    for name in ("trainLabels.csv", "testLabels.csv"):
        (nested / "kaggle" / name).rename(nested / name)
    with pytest.raises(DatasetError, match=r"one level too deep"):
        read_diabetic_retinopathy(nested, LabelOptions())


def test_empty_class_is_reported_by_check(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(SPEC, tmp_path, per_class=1)
    for name in ("trainLabels.csv", "testLabels.csv"):
        frame = pd.read_csv(root / name)
        frame[frame["level"] != 4].to_csv(root / name, index=False)
    with pytest.raises(DatasetError, match=r"class 'proliferative' has no image"):
        manifest_of(SPEC, root)  # every job refuses it
    problems = check_manifest(manifest_of(SPEC, root, empty_classes="keep"), progress=False)
    assert [p.file for p in problems if p.kind == "empty-class"] == [
        "diabetic_retinopathy:proliferative"
    ]


def test_every_row_of_a_long_csv_is_read_without_problems(tmp_path: Path) -> None:
    """(The reading time of the Kaggle-sized CSVs is in benchmarks/datasets.py.)"""
    root = tmp_path / "big"
    n_patients = 1_000
    numbers = np.arange(1, n_patients + 1)
    names = np.char.add(np.repeat(numbers, 2).astype(str), np.tile(["_left", "_right"], n_patients))
    levels = np.random.default_rng(0).integers(0, 5, size=names.size)
    _write_tree(root, [], [("1000000_left", "0")])
    pd.DataFrame({"image": names, "level": levels}).to_csv(root / "trainLabels.csv", index=False)
    source = read_diabetic_retinopathy(root, LabelOptions())
    assert len(source.table) == 2 * n_patients + 1
    assert source.problems == []
    assert source.table["label"].tolist()[:-1] == levels.tolist()
