"""Manifests: published-layout reading, split policies, hashing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.catalog import get_dataset_spec, resolve_dataset
from medtransfer.data.manifest import (
    build_manifest,
    load_manifest,
    original_split,
    patient_split,
    split_counts,
)
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.errors import DatasetError


@pytest.fixture
def tb_root(tmp_path: Path) -> Path:
    synthesize("shenzhencxr", tmp_path, SynthOptions(per_class=6, size=32, seed=1))
    synthesize("montgomerycxr", tmp_path, SynthOptions(per_class=5, size=32, seed=2))
    return tmp_path


def test_original_split_matches_hand_computed_pandas_permutation() -> None:
    # pandas DataFrame.sample(frac=1, random_state=42) on 10 rows gives this order;
    # the first floor(0.8 * 10) = 8 rows are train.
    order = [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]
    split = original_split(10)
    assert sorted(np.flatnonzero(split == "train").tolist()) == sorted(order[:8])
    assert sorted(np.flatnonzero(split == "test").tolist()) == [3, 6]


def test_original_split_matches_pandas_for_real_sizes() -> None:
    for n in (138, 662):
        expected = pd.DataFrame({"i": range(n)}).sample(frac=1, random_state=42)["i"].to_numpy()
        split = original_split(n)
        n_train = int(0.8 * n)
        assert set(np.flatnonzero(split == "train")) == set(expected[:n_train])
        assert (split == "test").sum() == n - n_train  # 138 -> 110/28


def test_patient_split_never_puts_a_patient_on_both_sides() -> None:
    rng = np.random.default_rng(0)
    for trial in range(25):
        n = int(rng.integers(5, 200))
        patients = rng.integers(0, max(2, n // 3), size=n).astype(str)
        labels = rng.integers(0, 3, size=n)
        split = patient_split(labels, patients, seed=trial)
        for patient in np.unique(patients):
            assert len(set(split[patients == patient])) == 1
        assert {"train"} <= set(split)


def test_patient_split_is_deterministic_and_near_the_fraction() -> None:
    labels = np.repeat([0, 1], 100)
    patients = np.array([f"p{i // 2}" for i in range(200)])
    a = patient_split(labels, patients, seed=3)
    b = patient_split(labels, patients, seed=3)
    assert (a == b).all()
    assert 0.15 <= (a == "test").mean() <= 0.25


def test_shenzhen_manifest_classes_counts_and_patients(tb_root: Path) -> None:
    manifest = build_manifest(resolve_dataset("shenzhen", tb_root))
    assert manifest.dataset == "shenzhencxr"
    assert manifest.class_names == ("normal", "tuberculosis")
    assert len(manifest) == 12
    assert sorted(manifest.table["label"].value_counts().tolist()) == [6, 6]
    first = manifest.table.iloc[0]
    assert first["path"].startswith("ChinaSet_AllFiles/CXR_png/CHNCXR_")
    assert first["patient"] == Path(first["path"]).name.rsplit("_", 1)[0]
    # the label agrees with the file-name suffix
    suffix = manifest.table["path"].str[-5].astype(int)
    assert (suffix == manifest.table["label"]).all()
    assert manifest.problems == ()


def test_montgomery_original_policy_is_recorded(tb_root: Path) -> None:
    manifest = build_manifest(resolve_dataset("montgomerycxr", tb_root), split_policy="original")
    assert manifest.params["split_policy"] == "original"
    assert manifest.params["split_rule"] == "original"
    # 10 rows: shuffled order [8, 1, 5, 0, 7, 2, 9, 4 | 3, 6]; train = first 8; the original's
    # validation hold-out shuffles train positions with np.random.seed(0) -> position 6 first,
    # floor(0.2 * 8) = 1 row -> row 9 is val
    split = manifest.table["split"].tolist()
    assert [i for i, s in enumerate(split) if s == "test"] == [3, 6]
    assert [i for i, s in enumerate(split) if s == "val"] == [9]
    counts = split_counts(manifest)
    assert counts.loc["total", "total"] == 10


def test_rows_of_a_missing_split_are_empty_where_select_raises(tb_root: Path) -> None:
    resolved = resolve_dataset("montgomerycxr", tb_root)
    manifest = build_manifest(resolved, split_policy="original")
    assert manifest.rows("val").tolist() == [9] and manifest.rows("test").tolist() == [3, 6]
    without = build_manifest(resolved, split_policy="original", val_fraction=0.0)
    assert without.rows("val").dtype == np.int64 and len(without.rows("val")) == 0
    with pytest.raises(DatasetError, match="'val' has no rows"):
        without.select("val")


def test_hash_is_deterministic_and_policy_sensitive(tb_root: Path) -> None:
    resolved = resolve_dataset("shenzhencxr", tb_root)
    a = build_manifest(resolved)
    b = build_manifest(resolved)
    c = build_manifest(resolved, split_policy="original")
    assert a.hash == b.hash
    assert a.hash != c.hash


def test_manifest_kept_in_cache(tb_root: Path, roots) -> None:
    manifest = load_manifest(resolve_dataset("shenzhencxr", tb_root), roots.cache)
    saved = roots.cache / "manifests" / "shenzhencxr" / f"{manifest.hash[:16]}.csv"
    assert saved.is_file()
    assert pd.read_csv(saved).shape == (12, 5)


def test_labels_follow_the_original_rule_and_problems_name_rows(tmp_path: Path) -> None:
    root = synthesize("shenzhencxr", tmp_path, SynthOptions(per_class=3, size=16))
    csv = root / "shenzhen_metadata.csv"
    frame = pd.read_csv(csv, dtype=str)
    normal_row = frame.index[frame["findings"] == "normal"][0]
    frame.loc[normal_row, "findings"] = "Normal "
    frame.to_csv(csv, index=False)
    manifest = build_manifest(resolve_dataset("shenzhencxr", tmp_path))
    name = frame.loc[normal_row, "study_id"]
    # the original's exact-match rule makes it TB; the problem is reported with its row
    assert manifest.table.loc[normal_row, "label"] == 1
    kinds = {p.kind for p in manifest.problems}
    assert {"unknown-label", "label-mismatch"} <= kinds
    assert any(name in p.file and f"row {normal_row + 2}" in p.file for p in manifest.problems)


def test_missing_folder_and_csv_errors_name_the_culprit(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="shenzhencxr"):
        build_manifest(resolve_dataset("shenzhencxr", tmp_path))
    (tmp_path / "shenzhencxr").mkdir()
    (tmp_path / "shenzhencxr" / "shenzhencxr_metadata.csv").write_text("study_id\n")
    with pytest.raises(DatasetError, match=r"shenzhen_metadata\.csv.*rename"):
        build_manifest(resolve_dataset("shenzhencxr", tmp_path))


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(DatasetError, match=r"shenzhencxr.*montgomerycxr"):
        get_dataset_spec("chexpertt")


def test_user_csv_and_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("benign", "malignant"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / "tree" / cls / f"{i}.png")
    folder = build_manifest(resolve_dataset(f"imagefolder:{tmp_path / 'tree'}", tmp_path))
    assert folder.class_names == ("benign", "malignant")
    assert len(folder) == 6
    rows = folder.table[["path", "label"]].assign(patient=["a", "a", "b", "c", "c", "d"])
    rows["label"] = rows["label"].map({0: "benign", 1: "malignant"})
    rows["path"] = "tree/" + rows["path"]
    rows.to_csv(tmp_path / "labels.csv", index=False)
    from_csv = build_manifest(resolve_dataset(f"csv:{tmp_path / 'labels.csv'}", tmp_path))
    assert from_csv.class_names == ("benign", "malignant")
    assert all(p.is_file() for p in from_csv.absolute_paths())
    assert from_csv.params["patient_ids"] is True
    for patient, group in from_csv.table.groupby("patient"):
        assert group["split"].nunique() == 1, patient


def test_chexpert_too_small_for_the_original_cut_is_a_clear_error(tmp_path: Path) -> None:
    synthesize("chexpert", tmp_path, SynthOptions(per_class=3, size=16))
    resolved = resolve_dataset("chexpert", tmp_path)
    assert len(build_manifest(resolved)) > 0  # the patient policy works on any size
    with pytest.raises(DatasetError, match=r"134049.*--split-policy patient"):
        build_manifest(resolved, split_policy="original")
