"""STOIC 2021: index CSV reading, the middle-slice loader, splits and bad trees."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.stoic import (
    SPECS,
    load_stoic,
    load_stoic_original,
    read_stoic,
)
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.stoic import synth_stoic
from medtransfer.errors import DatasetError, ImageDecodeError

SPEC = SPECS[0]


def _write(volume: np.ndarray, path: Path, direction=None, compress: bool = False) -> Path:
    image = sitk.GetImageFromArray(volume)  # numpy (z, y, x) -> image (x, y, z)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-170.0, -160.0, -300.0))
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def _write_tree(root: Path, rows: list[tuple[str, str]], volumes: bool = True) -> Path:
    lines = ["PatientID,probCOVID,probSevere"] + [f"{pid},{cov},0" for pid, cov in rows]
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "reference.csv").write_text("\n".join(lines) + "\n")
    (root / "data" / "mha").mkdir(parents=True, exist_ok=True)
    if volumes:
        for pid, _ in rows:
            _write(np.zeros((2, 2, 2), dtype=np.int16), root / "data" / "mha" / f"{pid}.mha")
    return root


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stoic") / "stoic"
    synth_stoic(root, SynthOptions(per_class=5, size=16, seed=3))
    return root


def test_spec_facts() -> None:
    assert SPEC.name == "stoic"
    assert SPEC.folder == "stoic"
    assert SPEC.class_names == ("covid_negative", "covid_positive")
    assert SPEC.metric == MEAN_PER_CLASS_ACCURACY
    assert SPEC.few_shot_resize == "shorter"
    assert SPEC.load is load_stoic
    assert SPEC.patients


def test_synthetic_tree_has_the_published_layout(synth_root: Path) -> None:
    csv = synth_root / "metadata" / "reference.csv"
    assert csv.read_text().splitlines()[0] == "PatientID,probCOVID,probSevere"
    frame = pd.read_csv(csv, dtype=str)
    assert sorted(frame["probCOVID"].value_counts().tolist()) == [5, 5]
    for pid in frame["PatientID"]:
        image = sitk.ReadImage(str(synth_root / "data" / "mha" / f"{pid}.mha"))
        assert image.GetDimension() == 3
        assert image.GetSize() == (16, 16, 16)
        assert image.GetPixelIDValue() == sitk.sitkInt16
        assert image.GetSpacing()[0] > 0 and image.GetOrigin()[2] < 0


def test_manifest_classes_counts_and_patients(
    synth_root: Path, manifest_of: Callable[..., Manifest]
) -> None:
    manifest = manifest_of(SPEC, synth_root)
    frame = pd.read_csv(synth_root / "metadata" / "reference.csv", dtype=str)
    assert manifest.class_names == ("covid_negative", "covid_positive")
    assert len(manifest) == 10
    assert manifest.problems == ()
    assert manifest.table["patient"].tolist() == frame["PatientID"].tolist()
    assert manifest.table["label"].tolist() == frame["probCOVID"].astype(int).tolist()
    assert manifest.table["path"].tolist() == [f"data/mha/{p}.mha" for p in frame["PatientID"]]
    assert all(p.is_file() for p in manifest.files())


def test_synthetic_volumes_decode_to_rgb_with_a_class_signal(
    synth_root: Path, manifest_of: Callable[..., Manifest]
) -> None:
    manifest = manifest_of(SPEC, synth_root)
    ground_glass = {0: [], 1: []}
    for path, label in zip(manifest.absolute_paths(), manifest.labels, strict=True):
        image = load_stoic(path)
        assert image.mode == "RGB" and image.size == (16, 16)
        gray = np.asarray(image)[..., 0]
        # -500..-300 HU -> (v + 1000) / 1250 * 255 = 102..142
        ground_glass[int(label)].append(int(((gray >= 95) & (gray <= 150)).sum()))
    assert min(ground_glass[1]) > max(ground_glass[0])


def test_middle_slice_window_truncation_and_orientation(tmp_path: Path) -> None:
    z, y, x = 5, 4, 6
    volume = np.full((z, y, x), -3000, dtype=np.int16)
    middle = np.array(
        [
            [-2000, -1000, -997, -995, 0, 300],
            [-500, -400, -300, 100, 137, 250],
            [10, 20, 30, 40, 50, 60],
            [-999, -998, 249, 248, 1000, 3000],
        ],
        dtype=np.int16,
    )
    volume[math.floor(0.5 * z)] = middle  # z = 2: the slice the original takes
    volume[1] = 250  # its neighbours differ, so taking the wrong slice shows
    volume[3] = -1000
    path = _write(volume, tmp_path / "v.mha")
    # hand computation: clip, (v + 1000) / 1250, * 255, truncate
    clipped = np.clip(middle.astype(np.float64), -1000, 250)
    expected = ((clipped + 1000) / 1250 * 255).astype(np.uint8)
    assert expected[0, 2] == 0 and expected[0, 3] == 1  # -997 -> 0.612, -995 -> 1.02
    image = load_stoic(path)
    assert image.mode == "RGB"
    assert image.size == (x, y)  # width = x, height = y: rows are y
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    np.testing.assert_array_equal(pixels[..., 0], expected)
    # top-right is (y = 0, x = max): anterior, patient's left; 300 HU saturates
    assert pixels[0, -1, 0] == 255 and pixels[-1, 0, 0] == expected[-1, 0]
    # the original's orientation: medpy's (x, y, z) array sliced at z, rows = x
    original = np.asarray(load_stoic_original(path))[..., 0]
    assert original.shape == (x, y)
    np.testing.assert_array_equal(original, expected.T)


def test_even_depth_takes_floor_half_and_compressed_files_read(tmp_path: Path) -> None:
    # Z = 4: z = floor(0.5 * 4) = 2, which holds 0 HU -> (0 + 1000) / 1250 * 255 = 204
    volume = np.stack([np.full((3, 3), v, dtype=np.int16) for v in (-1000, -500, 0, 250)])
    assert np.asarray(load_stoic(_write(volume, tmp_path / "a.mha")))[0, 0, 0] == 204
    packed = _write(volume, tmp_path / "b.mha", compress=True)
    assert b"CompressedData = True" in packed.read_bytes()[:400]
    assert np.asarray(load_stoic(packed))[0, 0, 0] == 204


def test_direction_is_applied_so_the_patients_left_stays_on_the_right(tmp_path: Path) -> None:
    volume = np.full((3, 2, 3), -1000, dtype=np.int16)
    volume[1, 0, 2] = 250  # stored at the largest x index
    flipped = _write(volume, tmp_path / "f.mha", direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    pixels = np.asarray(load_stoic(flipped))[..., 0]
    # x runs towards the patient's right in this file, so the bright voxel is on their right
    assert pixels[0, 0] == 255 and pixels[0, 2] == 0


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"missing\.mha"):
        load_stoic(tmp_path / "missing.mha")
    bad = tmp_path / "corrupt.mha"
    bad.write_text("not a volume")
    with pytest.raises(ImageDecodeError, match=r"corrupt\.mha"):
        load_stoic(bad)
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), dtype=np.int16)), str(flat))
    with pytest.raises(ImageDecodeError, match=r"flat\.mha.*2-D"):
        load_stoic(flat)
    full = _write(np.zeros((8, 16, 16), dtype=np.int16), tmp_path / "cut.mha")
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError, match=r"cut\.mha"):
        load_stoic(full)


def test_original_split_matches_a_hand_computed_shuffle(
    tmp_path: Path, manifest_of: Callable[..., Manifest]
) -> None:
    rows = [(str(100 + 7 * i), str(i % 2)) for i in range(13)]
    root = _write_tree(tmp_path / "stoic", rows, volumes=False)
    manifest = manifest_of(SPEC, root, split_policy="original")
    # the original: DataFrame.sample(frac=1, random_state=42), first floor(0.8 N) train;
    # validation: np.random.seed(0); shuffle range(N_train); first floor(0.2 N_train) are val
    order = pd.DataFrame({"i": range(13)}).sample(frac=1, random_state=42)["i"].to_numpy()
    train, test = order[:10], order[10:]
    positions = np.arange(10)
    np.random.seed(0)
    np.random.shuffle(positions)
    val = train[positions[:2]]
    expected = np.array(["train"] * 13, dtype=object)
    expected[test] = "test"
    expected[val] = "val"
    assert manifest.table["split"].tolist() == expected.tolist()


def test_patient_split_keeps_each_patient_on_one_side(
    tmp_path: Path, manifest_of: Callable[..., Manifest]
) -> None:
    rng = np.random.default_rng(7)
    for trial in range(5):
        ids = rng.integers(0, 15, size=40)
        rows = [(str(pid), str(pid % 2)) for pid in ids]
        root = _write_tree(tmp_path / f"t{trial}" / "stoic", rows, volumes=False)
        manifest = manifest_of(SPEC, root, seed=trial)
        assert {p.kind for p in manifest.problems} == {"duplicate"}
        for patient, group in manifest.table.groupby("patient"):
            assert group["split"].nunique() == 1, patient
        assert set(manifest.table["split"]) == {"train", "val", "test"}


def test_label_rule_and_bad_values_are_reported_by_row(tmp_path: Path) -> None:
    rows = [("1", "1"), ("2", "0"), ("3", "1.0"), ("4", "0.5"), ("5", "yes"), ("6", "0")]
    root = _write_tree(tmp_path / "stoic", rows)
    source = read_stoic(root, LabelOptions())
    assert source.table["patient"].tolist() == ["1", "2", "3", "6"]
    assert source.table["label"].tolist() == [1, 0, 1, 0]
    unknown = [p for p in source.problems if p.kind == "unknown-label"]
    assert [p.file for p in unknown] == [
        "metadata/reference.csv row 5 (PatientID 4)",
        "metadata/reference.csv row 6 (PatientID 5)",
    ]
    assert "'0.5'" in unknown[0].detail
    # the original split is computed over all CSV rows, before the two are left out
    assert source.table["original_order"].nunique() == 4


def test_duplicate_and_empty_class_problems(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "stoic", [("10", "0"), ("11", "0"), ("10", "0")])
    problems = read_stoic(root).problems
    duplicate = next(p for p in problems if p.kind == "duplicate")
    assert duplicate.file == "metadata/reference.csv rows 2, 4 (PatientID 10)"
    empty = next(p for p in problems if p.kind == "empty-class")
    assert "covid_positive" in empty.detail


def test_layout_errors_name_the_expected_path(tmp_path: Path) -> None:
    root = tmp_path / "stoic"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"metadata/reference\.csv not found.*datasets synth"):
        read_stoic(root)
    (root / "reference.csv").write_text("PatientID,probCOVID,probSevere\n1,1,0\n")
    with pytest.raises(DatasetError, match="one level too shallow"):
        read_stoic(root)
    deep = tmp_path / "deep" / "stoic"
    _write_tree(deep / "stoic2021-training", [("1", "1")])
    with pytest.raises(DatasetError, match=r"one level too deep.*stoic2021-training"):
        read_stoic(deep)
    no_volumes = tmp_path / "novol" / "stoic"
    _write_tree(no_volumes, [("1", "1")])
    (no_volumes / "data" / "mha" / "1.mha").rename(no_volumes / "data" / "1.mha")
    (no_volumes / "data" / "mha").rmdir()
    with pytest.raises(DatasetError, match=r"data/mha not found.*move them"):
        read_stoic(no_volumes)
    columns = tmp_path / "columns" / "stoic"
    _write_tree(columns, [("1", "1")])
    (columns / "metadata" / "reference.csv").write_text("PatientID,covid\n1,1\n")
    with pytest.raises(DatasetError, match=r"reference\.csv: missing column\(s\) \['probCOVID'\]"):
        read_stoic(columns)


def test_every_row_of_a_long_index_is_read(tmp_path: Path) -> None:
    """(The reading time of a large index is in benchmarks/datasets.py.)"""
    n = 2_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "PatientID": np.arange(n).astype(str),
            "probCOVID": rng.integers(0, 2, n),
            "probSevere": rng.integers(0, 2, n),
        }
    )
    root = tmp_path / "stoic"
    (root / "metadata").mkdir(parents=True)
    (root / "data" / "mha").mkdir(parents=True)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    (root / "metadata" / "reference.csv").write_text(buffer.getvalue())
    source = read_stoic(root)
    assert len(source.table) == n and source.problems == []
    assert source.table["label"].tolist() == frame["probCOVID"].tolist()
