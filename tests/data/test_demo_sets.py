"""The demo modality-patch set: structure, balance, determinism, reuse, provenance."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data import demo_sets
from medtransfer.data.demo_sets import (
    DEMO_CLASSES,
    DEMO_SET_DESCRIPTION,
    DEMO_SOURCES,
    build_modality_patches,
)
from medtransfer.data.images import load_image
from medtransfer.errors import ConfigError, DatasetError

PATCH = 32
PER_IMAGE = 3
MAX_SOURCES = max(Counter(s.label for s in DEMO_SOURCES).values())
PER_CLASS = PER_IMAGE * MAX_SOURCES


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small set, shared by the read-only tests of this module."""
    out = tmp_path_factory.mktemp("demo") / "modality"
    return build_modality_patches(out, patch_size=PATCH, per_image=PER_IMAGE, seed=3)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_structure_and_labels(built: Path) -> None:
    assert (built / "SOURCES.txt").is_file()
    with open(built / "labels.csv", newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["path", "label", "patient"]
    rows = _rows(built)
    assert {row["label"] for row in rows} == set(DEMO_CLASSES)
    counts = Counter(row["label"] for row in rows)
    assert set(counts.values()) == {PER_CLASS}  # balanced, no class empty
    listed = {row["path"] for row in rows}
    on_disk = {p.relative_to(built).as_posix() for p in (built / "images").rglob("*.png")}
    assert listed == on_disk
    for row in rows:
        assert row["path"].startswith(f"images/{row['label']}/{row['patient']}_")
    source_label = {s.source_id: s.label for s in DEMO_SOURCES}
    assert {row["patient"] for row in rows} == set(source_label)
    assert all(source_label[row["patient"]] == row["label"] for row in rows)
    assert not list(built.parent.glob(".*"))  # no temporary folder left behind


def test_patches_are_decodable_rgb_of_right_size(built: Path) -> None:
    for row in _rows(built):
        path = built / row["path"]
        with Image.open(path) as raw:
            assert raw.mode == "RGB"
            assert raw.size == (PATCH, PATCH)
        arr = np.asarray(load_image(path))
        assert arr.shape == (PATCH, PATCH, 3)
        assert arr.std() > 1.0  # no empty patches
        assert (arr.max(axis=-1) < 16).mean() <= 0.25


def test_sources_file_names_every_source(built: Path) -> None:
    text = (built / "SOURCES.txt").read_text(encoding="utf-8")
    for source in DEMO_SOURCES:
        assert source.file in text
        assert source.package in text
        assert source.licence in text
    assert "693_" not in text  # CQ500-derived CT is not redistributable
    assert "not a clinical benchmark" in text
    assert "not a clinical benchmark" in DEMO_SET_DESCRIPTION


def test_deterministic_and_reused(built: Path, tmp_path: Path) -> None:
    again = build_modality_patches(
        tmp_path / "again", patch_size=PATCH, per_image=PER_IMAGE, seed=3
    )
    assert _snapshot(again) == _snapshot(built)

    before = _mtimes(again)
    assert build_modality_patches(again, patch_size=PATCH, per_image=PER_IMAGE, seed=3) == again
    assert _mtimes(again) == before

    other_seed = build_modality_patches(
        tmp_path / "other", patch_size=PATCH, per_image=PER_IMAGE, seed=4
    )
    assert _snapshot(other_seed)["labels.csv"] == _snapshot(built)["labels.csv"]
    assert _snapshot(other_seed) != _snapshot(built)


def test_rebuilds_when_parameters_change_or_files_missing(tmp_path: Path) -> None:
    out = tmp_path / "set"
    build_modality_patches(out, patch_size=PATCH, per_image=1, seed=0)
    build_modality_patches(out, patch_size=24, per_image=1, seed=0)
    rows = _rows(out)
    assert len(rows) == len(DEMO_CLASSES) * MAX_SOURCES
    assert Image.open(out / rows[0]["path"]).size == (24, 24)
    assert not [p for p in tmp_path.iterdir() if p.name != "set"]  # old copy removed

    (out / rows[0]["path"]).unlink()
    build_modality_patches(out, patch_size=24, per_image=1, seed=0)
    assert (out / rows[0]["path"]).is_file()


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("keep me")
    with pytest.raises(DatasetError, match=r"thesis: folder is not empty"):
        build_modality_patches(out, patch_size=PATCH, per_image=1)
    assert (out / "chapter1.tex").read_text() == "keep me"
    (out / "manifest.json").write_text('{"files": {}, "params": {}}')  # someone else's
    with pytest.raises(DatasetError, match=r"thesis: folder is not empty"):
        build_modality_patches(out, patch_size=PATCH, per_image=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


@pytest.mark.parametrize(
    "kwargs",
    [{"patch_size": 8}, {"patch_size": 96.0}, {"per_image": 0}, {"seed": -1}, {"seed": True}],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        build_modality_patches(tmp_path / "x", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_defaults_give_at_least_20_balanced_patches_per_class() -> None:
    counts = demo_sets._patch_counts(12)
    per_class = Counter()
    for source in DEMO_SOURCES:
        per_class[source.label] += counts[source.source_id]
    assert set(per_class) == set(DEMO_CLASSES)
    assert len(set(per_class.values())) == 1
    assert min(per_class.values()) >= 20


def test_monochrome1_inverted_and_rescale_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME1", bits_stored=12)
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -100
    path = tmp_path / "mono1.dcm"
    ds.save_as(path, enforce_file_format=True)
    monkeypatch.setattr(demo_sets, "_dicom_file", lambda name, package: path)
    out = demo_sets._dicom_uint8("mono1.dcm", "pydicom-data")
    # MONOCHROME1: the lowest stored value is displayed white.
    assert out.tolist() == [[255, 191], [128, 0]]


def test_missing_dicom_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.data

    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda name, download=False: None)
    with pytest.raises(DatasetError, match=r"RG1_UNCR\.dcm.*pip install pydicom-data"):
        demo_sets._dicom_uint8("RG1_UNCR.dcm", "pydicom-data")
