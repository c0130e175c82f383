"""Pre-resized copies in the cache: written once, used only while the sources match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import build_manifest
from medtransfer.data.prepare import original_pixels, prepare, prepared_pixels
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.errors import ConfigError


@pytest.fixture
def manifest(tmp_path: Path):
    synthesize("shenzhencxr", tmp_path / "data", SynthOptions(per_class=4, size=64))
    return build_manifest(resolve_dataset("shenzhencxr", tmp_path / "data"))


def test_prepare_writes_shrunk_copies_once_and_resumes(manifest, tmp_path: Path) -> None:
    folder, written = prepare(manifest, tmp_path / "cache", "shenzhencxr", 48, progress=False)
    assert written == 8
    copies = sorted(folder.rglob("*.png"))
    assert len(copies) == 8
    assert all(min(Image.open(p).size) == 48 for p in copies)
    assert not list((manifest.root).rglob("*.tmp"))  # nothing written into the data root
    _, again = prepare(manifest, tmp_path / "cache", "shenzhencxr", 48, progress=False)
    assert again == 0
    copies[0].unlink()  # a lost copy is rewritten, nothing else
    _, repaired = prepare(manifest, tmp_path / "cache", "shenzhencxr", 48, progress=False)
    assert repaired == 1


def test_prepared_copy_is_used_only_when_big_enough_and_fresh(manifest, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare(manifest, cache, "shenzhencxr", 48, progress=False)
    source = prepared_pixels(manifest, cache, "shenzhencxr", min_side=40)
    assert source is not None and source.describe == {"pixels": "prepared", "size": 48}
    assert source.fingerprint == original_pixels(manifest).fingerprint
    assert source.loader(source.paths[0]).mode == "RGB"
    assert prepared_pixels(manifest, cache, "shenzhencxr", min_side=49) is None
    os.utime(manifest.absolute_paths()[2], ns=(5, 5))
    assert prepared_pixels(manifest, cache, "shenzhencxr", min_side=40) is None


def test_images_smaller_than_the_size_are_copied_not_enlarged(manifest, tmp_path: Path) -> None:
    folder, _ = prepare(manifest, tmp_path / "cache", "shenzhencxr", 100, progress=False)
    assert all(Image.open(p).size == (64, 64) for p in folder.rglob("*.png"))


def test_tiny_size_is_refused(manifest, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--size 4"):
        prepare(manifest, tmp_path / "cache", "shenzhencxr", 4, progress=False)
