"""The saliency job: images drawn from the test split, maps equal to the core computed on
the model's normalised input, outputs beside the record, a cache that resumes, and the
original's algorithm reproduced under --preset original."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medtransfer.analysis.saliency import occlusion_scores, saliency_map
from medtransfer.config import Roots
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError
from medtransfer.jobs.options import DataOptions
from medtransfer.jobs.registry import get_job
from medtransfer.jobs.saliency import SaliencyOptions, run_saliency
from medtransfer.models.loader import load_backbone
from tests.jobs.conftest import MODEL, RUN, log_lines

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = SaliencyOptions(images=2, image_size=32, patch=2, stride=4, bootstrap=50)


def test_maps_values_and_pictures_beside_the_record(job_roots: Roots) -> None:
    result = run_saliency(job_roots, DataOptions("shenzhencxr"), MODEL, SMALL, RUN)
    record = result.record
    assert record["protocol"] == "saliency" and record["params"]["map_size"] == 30
    per_image = record["per_image"]
    values = [entry["attentive_diffusion"] for entry in per_image]
    assert len(values) == 2 and record["metrics"]["images"] == 2
    assert record["metrics"]["attentive_diffusion"] == pytest.approx(np.mean(values))
    low, high = record["metrics"]["attentive_diffusion_ci"]
    assert min(values) <= low <= high <= max(values)
    assert "stride_note" in record and "interpolated" in record["stride_note"]
    assert "mean colour of the imagenet normalisation" in record["occluder"]
    folder = result.record_path.with_suffix("")
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == [
        entry["outputs"] for entry in per_image
    ]
    data = DataOptions("shenzhencxr").open(job_roots)
    manifest = data.manifest
    test_items = set(manifest.table["path"][manifest.table["split"] == "test"])
    backbone = load_backbone("random_r18", job_roots).eval()
    for entry in per_image:
        assert entry["item"] in test_items
        saved = np.load(folder / entry["outputs"] / "map.npy")
        picture = manifest.loader(manifest.root / entry["item"])
        with torch.inference_mode():
            normalised = backbone.normalize(Preprocessing(32, resize="shorter")(picture)[None])[0]
        expected = saliency_map(
            occlusion_scores(backbone.trunk, normalised, patch=2, stride=4),
            (32, 32),
            patch=2,
            stride=4,
        )
        assert np.abs(saved - expected).max() <= 1e-5
        for name in ("heatmap.png", "overlay.png"):
            with Image.open(folder / entry["outputs"] / name) as png:
                assert png.size == (30, 30) and png.mode == "RGB"
    assert log_lines(result.record_path)[-3:] == result.lines
    assert result.lines[-1].startswith("Attentive diffusion on dataset shenzhencxr with model")


def test_an_image_of_yours_and_a_second_run_from_the_cache(
    job_roots: Roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.png"
    pixels = np.random.default_rng(0).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(mine)
    options = dataclasses.replace(SMALL, images=0, image=mine)
    first = run_saliency(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    assert [entry["item"] for entry in first.record["per_image"]] == [str(mine.resolve())]
    assert first.record["per_image"][0]["label"] is None
    assert "attentive_diffusion_ci" not in first.record["metrics"]  # one image: no interval

    def no_more_forward_passes(*args, **kwargs):
        raise AssertionError("the scores should come from the cache")

    monkeypatch.setattr("medtransfer.analysis.saliency.occlusion_scores", no_more_forward_passes)
    again = run_saliency(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    assert again.metrics["attentive_diffusion"] == first.metrics["attentive_diffusion"]
    assert again.record_path != first.record_path


def test_bad_geometry_and_nothing_to_do_are_clear_errors(job_roots: Roots) -> None:
    data = DataOptions("shenzhencxr")
    with pytest.raises(ConfigError, match="too small for a 10-px patch"):
        run_saliency(
            job_roots, data, MODEL, dataclasses.replace(SMALL, patch=10, image_size=16), RUN
        )
    with pytest.raises(ConfigError, match="Nothing to analyse"):
        run_saliency(job_roots, data, MODEL, dataclasses.replace(SMALL, images=0), RUN)


def original_saliency(
    trunk: torch.nn.Module, normalized_img: torch.Tensor, size: int
) -> np.ndarray:
    """The original's compute_saliency_map, with its model in train mode (never .eval())."""
    model = copy.deepcopy(trunk).train()
    img = normalized_img
    occlusion_window = torch.zeros((img.size(0), size, size))
    occlusion_scores = np.zeros((img.size(1), img.size(2)))
    with torch.no_grad():
        orig_feature = model.forward(img.unsqueeze(0)).squeeze(0).numpy()
    orig_feature_mag = np.sqrt((orig_feature**2).sum())
    for i in range(1 + img.size(1) - size):
        for j in range(1 + img.size(2) - size):
            img_occluded = img.clone()
            img_occluded[:, i : i + size, j : j + size] = occlusion_window
            with torch.no_grad():
                occluded_feature = model.forward(img_occluded.unsqueeze(0)).squeeze(0).numpy()
            occlusion_score = (
                np.sqrt(((orig_feature - occluded_feature) ** 2).sum()) / orig_feature_mag
            )
            occlusion_scores[i : i + size, j : j + size] += occlusion_score
    occlusion_scores /= size**2
    return occlusion_scores[size - 1 : img.size(1) - size + 1, size - 1 : img.size(2) - size + 1]


def test_preset_original_reproduces_the_original_algorithm(job_roots: Roots) -> None:
    job = get_job("saliency")
    given = {"dataset": "shenzhencxr", "model": "random_r18", "images": 1, "image_size": 33}
    given |= {"patch": 14, "device": "cpu", "progress": False, "bootstrap": 0}
    data, model, options, run = job.resolve(given, "original")
    assert (options.batchnorm, options.stride, run.precision) == ("per-sample", 1, "fp32")
    result = run_saliency(job_roots, data, model, options, run)
    assert result.record["params"]["preset"] == "original"
    entry = result.record["per_image"][0]
    manifest = data.open(job_roots).manifest
    picture = manifest.loader(manifest.root / entry["item"])
    backbone = load_backbone("random_r18", job_roots)
    img = Preprocessing(33, resize="shorter")(picture)
    normalized_img = backbone.normalize(img[None])[0]
    expected = original_saliency(backbone.trunk, normalized_img, 14)
    mean_attention = np.mean(expected)
    attentive_diffusion = 100 * (expected > mean_attention).sum() / np.prod(expected.size)
    saved = np.load(result.record_path.with_suffix("") / entry["outputs"] / "map.npy")
    assert np.abs(saved - expected).max() <= 1e-5
    assert abs(entry["attentive_diffusion"] - attentive_diffusion) <= 0.5
    record = json.loads(result.record_path.read_text())
    assert record["preset_settings"]["batchnorm"] == "per-sample"
