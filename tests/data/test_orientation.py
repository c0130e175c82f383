"""STOIC's slice orientation as a data option: part of the manifest, the feature key and
the cache folders, and the original's transposed slice when asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.errors import DatasetError
from medtransfer.jobs.options import DataOptions


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    base = tmp_path_factory.mktemp("stoic")
    args = ["datasets", "synth", "-d", "stoic", "--out", str(base / "data")]
    assert main([*args, "--per-class", "2", "--size", "24"]) == 0
    return resolve_roots(base / "data", base / "cache", base / "results")


def test_the_original_orientation_is_the_transposed_slice_and_its_own_data(roots: Roots) -> None:
    radiological = DataOptions("stoic").open(roots)
    original = DataOptions("stoic", stoic_orientation="original").open(roots)
    assert radiological.manifest.params["orientation"] == "radiological"
    assert original.manifest.params["orientation"] == "original"
    assert (radiological.manifest.decoder, original.manifest.decoder) == ("", "original")
    assert radiological.manifest.hash != original.manifest.hash
    assert radiological.manifest.rows_hash != original.manifest.rows_hash  # feature key
    assert (radiological.key, original.key) == ("stoic", "stoic@original")  # cache folders
    item = radiological.manifest.absolute_paths()[0]
    upright = np.asarray(radiological.manifest.loader(item))
    transposed = np.asarray(original.manifest.loader(item))
    np.testing.assert_array_equal(transposed, upright.transpose(1, 0, 2))


def test_other_datasets_ignore_it_and_their_manifests_do_not_change(tmp_path: Path) -> None:
    from medtransfer.data.catalog import resolve_dataset
    from medtransfer.data.manifest import build_manifest

    assert main(["datasets", "synth", "-d", "bach", "--out", str(tmp_path), "--per-class", "2",
                 "--size", "16"]) == 0  # fmt: skip
    resolved = resolve_dataset("bach", tmp_path)
    plain, asked = build_manifest(resolved), build_manifest(resolved, orientation="original")
    assert "orientation" not in plain.params and plain.hash == asked.hash
    assert plain.decoder == asked.decoder == ""


def test_an_unknown_orientation_names_the_choices(roots: Roots) -> None:
    from medtransfer.data.catalog import resolve_dataset
    from medtransfer.data.manifest import build_manifest

    with pytest.raises(DatasetError, match="radiological, original"):
        build_manifest(resolve_dataset("stoic", roots.data), orientation="sideways")
