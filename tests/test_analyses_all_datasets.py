"""Both analyses on every catalog dataset's synthetic tree (tiny sizes), and the multi-view
pairs of the two datasets that have them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.data.catalog import CATALOG
from medtransfer.jobs.invariance import InvarianceOptions, run_invariance
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.registry import get_job
from medtransfer.jobs.saliency import SaliencyOptions, run_saliency

pytestmark = pytest.mark.usefixtures("single_thread")

MODEL = ModelOptions("random_r18")
RUN = RunOptions(device="cpu", batch_size=64, progress=False)
NAMES = [spec.name for spec in CATALOG]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    base = tmp_path_factory.mktemp("analyses")
    for name in NAMES:
        per_class = "4" if name in ("chexpert", "diabetic_retinopathy") else "3"  # 1 pair each
        args = ["datasets", "synth", "-d", name, "--out", str(base / "data")]
        assert main([*args, "--per-class", per_class, "--size", "32"]) == 0
    return resolve_roots(base / "data", base / "cache", base / "results")


@pytest.mark.parametrize("name", NAMES)
def test_saliency_and_invariance_run_on_the_published_layout(trees: Roots, name: str) -> None:
    data = DataOptions(name)
    saliency = SaliencyOptions(images=1, image_size=32, patch=2, stride=4, bootstrap=0)
    result = run_saliency(trees, data, MODEL, saliency, RUN)
    assert result.record["dataset"] == name and result.metrics["images"] == 1
    assert 0 < result.metrics["attentive_diffusion"] < 100
    invariance = InvarianceOptions(transform="h_flip", images=2, image_size=32, bootstrap=0)
    result = run_invariance(trees, data, MODEL, invariance, RUN)
    assert result.record["curve"]["similarity"][0] == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(result.metrics["similarity"]) and result.metrics["images"] == 2


@pytest.mark.parametrize("name", ["chexpert", "diabetic_retinopathy"])
def test_multiview_from_the_store_and_under_the_preset(
    trees: Roots, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataOptions(name)
    options = InvarianceOptions(multiview=True, image_size=32, bootstrap=0)
    first = run_invariance(trees, data, MODEL, options, RUN)
    assert first.record["params"]["transform"] == "multi_view"
    assert first.record["pairs_available"] == first.metrics["images"] >= 1
    assert len(first.record["partners"]) == len(first.record["items"])

    def forbidden(*args, **kwargs):
        raise AssertionError("multi-view features come from the feature store")

    monkeypatch.setattr("medtransfer.features.store.extract", forbidden)
    monkeypatch.setattr("medtransfer.jobs.invariance_features.Network.features", forbidden)
    again = run_invariance(trees, data, MODEL, options, RUN)
    assert again.metrics["similarity"] == first.metrics["similarity"]
    monkeypatch.undo()
    given = {"dataset": name, "model": "random_r18", "multiview": True, "images": 5}
    given |= {"image_size": 64, "split_policy": "patient", "device": "cpu", "progress": False}
    preset = run_invariance(trees, *get_job("invariance").resolve(given, "original"))
    assert preset.metrics["images"] == 5  # pairs drawn with replacement, as the original
    assert preset.record["statistics"]["ridge"] == 1e-6


def test_a_dataset_without_pairs_in_its_data_says_so(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    args = ["datasets", "synth", "-d", "chexpert", "--out", str(data_root), "--per-class", "2"]
    assert main([*args, "--size", "32"]) == 0
    roots = resolve_roots(data_root, tmp_path / "cache", tmp_path / "results")
    options = InvarianceOptions(multiview=True, image_size=32)
    from medtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match="no lateral/frontal pair in the data"):
        run_invariance(roots, DataOptions("chexpert"), MODEL, options, RUN)
