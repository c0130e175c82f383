"""iChallenge-AMD: the Training400 layout, the optional amd_labels.csv, problems, splits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.ichallenge_amd import SPECS, read_ichallenge_amd
from medtransfer.data.spec import ACCURACY
from medtransfer.errors import DatasetError

AMD = SPECS[0]


def test_spec_facts() -> None:
    assert AMD.name == "ichallenge_amd"
    assert "amd" in AMD.aliases
    assert AMD.metric == ACCURACY
    assert AMD.patients == ""
    assert AMD.few_shot_resize == "square"


def test_amd_synthetic_tree_loads(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=3)
    manifest = manifest_of(AMD, root)
    assert manifest.class_names == ("non_amd", "amd")
    assert manifest.problems == ()
    table = manifest.table
    assert len(table) == 6
    assert (table["patient"] == "").all()
    amd = table["path"].str.startswith("Training400/AMD/A")
    assert (table.loc[amd, "label"] == 1).all() and amd.sum() == 3
    assert table.loc[~amd, "path"].str.startswith("Training400/Non-AMD/N").all()
    assert (table.loc[~amd, "label"] == 0).all()
    csv = pd.read_csv(root / "amd_labels.csv")
    assert csv.shape == (6, 2)
    for path in manifest.absolute_paths():
        assert load_image(path).mode == "RGB"


def test_amd_without_csv_reads_the_folders_in_sorted_order(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=3)
    with_csv = read_ichallenge_amd(root, LabelOptions()).table
    (root / "amd_labels.csv").unlink()
    from_folders = read_ichallenge_amd(root, LabelOptions()).table
    assert from_folders["path"].tolist() == sorted(
        from_folders["path"], key=lambda p: p.rsplit("/", 1)[1]
    )
    pd.testing.assert_frame_equal(with_csv, from_folders)


@pytest.mark.parametrize("with_csv", [True, False])
def test_amd_original_split_matches_the_originals_shuffle(
    tmp_path: Path,
    with_csv: bool,
    synth_tree: Callable[..., Path],
    manifest_of: Callable[..., Manifest],
    original_split: Callable[[list[str]], dict[str, str]],
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=6)
    if with_csv:
        # a user's CSV in another order: the original shuffles the CSV's rows
        csv = pd.read_csv(root / "amd_labels.csv").iloc[::-1]
        csv.to_csv(root / "amd_labels.csv", index=False)
        rows = csv["imgName"].tolist()
    else:
        (root / "amd_labels.csv").unlink()
        rows = sorted(p.stem for p in (root / "Training400").rglob("*.jpg"))
    manifest = manifest_of(AMD, root, split_policy="original")
    stems = manifest.table["path"].str.extract(r"/(\w+)\.jpg$")[0]
    assert stems.tolist() == rows
    assert dict(zip(stems, manifest.table["split"], strict=True)) == original_split(rows)


def test_amd_csv_disagreements_are_problems(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=3)
    csv = pd.read_csv(root / "amd_labels.csv", dtype=str)
    csv.loc[3, "label"] = "1"  # N0001 called AMD: prefix and folder disagree
    csv.loc[4, "label"] = "2"  # N0002: unknown label
    csv = pd.concat([csv.drop(index=5), csv.iloc[[0]]])  # N0003 unlisted, A0001 twice
    csv.to_csv(root / "amd_labels.csv", index=False)
    source = read_ichallenge_amd(root, LabelOptions())
    found = {(p.kind, p.file) for p in source.problems}
    assert ("label-mismatch", "amd_labels.csv row 5 (N0001)") in found
    mismatch = [p for p in source.problems if p.file == "amd_labels.csv row 5 (N0001)"]
    assert any("Training400/Non-AMD/" in p.detail for p in mismatch)  # the folder check
    assert any("file name says non_amd" in p.detail for p in mismatch)  # the prefix check
    assert ("unknown-label", "amd_labels.csv row 6 (N0002)") in found
    assert ("duplicate", "amd_labels.csv row 7 (A0001)") in found
    assert ("unlisted", "Training400/Non-AMD/N0003.jpg") in found
    # the CSV's label decides, as in the original: N0001 is read from the AMD folder
    assert source.table["path"].tolist() == [
        "Training400/AMD/A0001.jpg",
        "Training400/AMD/A0002.jpg",
        "Training400/AMD/A0003.jpg",
        "Training400/AMD/N0001.jpg",
    ]


def test_amd_folder_disagreements_and_empty_class(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=2)
    (root / "amd_labels.csv").unlink()
    shutil.move(root / "Training400/Non-AMD/N0001.jpg", root / "Training400/AMD/N0001.jpg")
    shutil.move(root / "Training400/Non-AMD/N0002.jpg", root / "Training400/AMD/X0002.jpg")
    source = read_ichallenge_amd(root, LabelOptions())
    found = {(p.kind, p.file) for p in source.problems}
    assert ("label-mismatch", "Training400/AMD/N0001.jpg") in found
    assert ("bad-name", "Training400/AMD/X0002.jpg") in found
    assert ("empty-class", "Training400/Non-AMD") in found
    assert source.table["label"].tolist() == [1, 1, 1, 1]


def test_amd_layout_errors_name_the_culprit(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=1)
    (root / "amd_labels.csv").write_text("imgName\nA0001\n")
    with pytest.raises(DatasetError, match=r"amd_labels\.csv.*at least 2 columns"):
        read_ichallenge_amd(root, LabelOptions())
    (root / "amd_labels.csv").unlink()
    (root / "Training400").rename(root / "inner")
    (root / "Training400").mkdir()
    (root / "inner").rename(root / "Training400" / "Training400")
    with pytest.raises(DatasetError, match=r"Training400/Training400.*too deep"):
        read_ichallenge_amd(root, LabelOptions())
    (root / "Training400" / "Training400").rename(root / "inner")
    (root / "Training400").rmdir()
    for folder in (root / "inner").iterdir():
        folder.rename(root / folder.name)
    with pytest.raises(DatasetError, match=r"AMD/ or Non-AMD/ directly"):
        read_ichallenge_amd(root, LabelOptions())
    with pytest.raises(DatasetError, match=r"Training400 not found.*datasets synth"):
        read_ichallenge_amd(tmp_path / "nothing", LabelOptions())


def test_amd_patient_split_has_every_image_on_one_side(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(AMD, tmp_path, size=20, per_class=8)
    for seed in range(3):
        table = manifest_of(AMD, root, seed=seed).table
        assert not table["path"].duplicated().any()
        assert set(table["split"]) == {"train", "val", "test"}
