"""The reconstruct job: images chosen and written beside one record, the original's
preset, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medtransfer.analysis import reconstruction
from medtransfer.config import Roots
from medtransfer.data.images import load_image
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError, ModelError
from medtransfer.jobs import reconstruct as job_module
from medtransfer.jobs.options import DataOptions
from medtransfer.jobs.reconstruct import ReconstructOptions, run_reconstruct
from medtransfer.results.records import outputs_folder
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines
from tests.support.threads import one_thread  # noqa: F401  (autouse)

TINY = ReconstructOptions(
    layer="layer3", steps=5, images=2, image_size=SIZE, code_size=SIZE, depth=2,
    checkpoint_every=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def finished(job_roots: Roots):
    return run_reconstruct(job_roots, DataOptions("shenzhencxr"), MODEL, TINY, RUN)


def test_one_record_with_every_image_and_its_files(job_roots: Roots, finished) -> None:
    record = finished.record
    assert record["protocol"] == "reconstruction" and record["model"] == "random_r18"
    assert (
        finished.record_path.parent == job_roots.results / "reconstruction/random_r18/shenzhencxr"
    )
    params = record["params"]
    assert (params["layer"], params["steps"], params["lr"], params["seed"]) == (
        "layer3",
        5,
        1e-3,
        0,
    )
    assert params["crop"] == "centre" and params["normalization"] == "imagenet"
    assert params["reconstruction"]["generator"]["channels_down"] == [16, 32]
    assert params["precision"] == "fp32" and params["preset"] == "none"
    images = record["images"]
    assert len(images) == 2 == finished.metrics["images"]
    manifest_items = {image["item"] for image in images}
    assert len(manifest_items) == 2 and record["groups"] == [[i["item"] for i in images]]
    folder = outputs_folder(finished.record_path)
    for image in images:
        curve = image["loss_curve"]
        assert curve["steps"] == [1, 5] and curve["loss"][0] == image["first_loss"]
        assert image["final_loss"] < image["first_loss"]
        files = {key: folder / name for key, name in image["files"].items()}
        assert files["reconstruction"].name == "reconstruction.png"
        assert all(path.is_file() for path in files.values())
        raw = np.load(files["raw"])
        assert raw.shape == (3, SIZE, SIZE) and raw.dtype == np.float32
        pixels = np.asarray(Image.open(files["reconstruction"]))
        expected = reconstruction.quantize(torch.from_numpy(raw)[None], "round")[0]
        assert np.array_equal(pixels, expected)
        source = job_roots.data / "shenzhencxr" / image["item"]
        target = Preprocessing(SIZE, resize="shorter")(load_image(source))
        saved_target = np.asarray(Image.open(files["target"])).astype(np.float32) / 255
        np.testing.assert_allclose(saved_target, target.permute(1, 2, 0).numpy(), atol=1e-6)
        comparison = Image.open(files["comparison"])
        assert comparison.width > 2 * SIZE and comparison.height > SIZE
    mean = sum(i["final_loss"] for i in images) / 2
    assert finished.metrics["feature_mse"] == pytest.approx(mean)
    assert len(finished.lines) == 3 and finished.lines[-1].startswith("mean feature MSE over 2")
    log = log_lines(finished.record_path)
    assert any(
        line.endswith("Iteration: 1, loss: " + f"{images[0]['first_loss']:f}") for line in log
    )
    assert not list((job_roots.cache / "reconstruction").iterdir())  # checkpoints removed
    assert json.loads(finished.record_path.read_text())["images"] == images


def test_the_same_run_again_gives_the_same_images(job_roots: Roots, finished) -> None:
    again = run_reconstruct(job_roots, DataOptions("shenzhencxr"), MODEL, TINY, RUN)
    assert again.record_path != finished.record_path
    for first, second in zip(finished.record["images"], again.record["images"], strict=True):
        assert first["item"] == second["item"] and first["final_loss"] == second["final_loss"]


def test_the_original_preset(job_roots: Roots) -> None:
    from medtransfer.jobs.registry import get_job

    job = get_job("reconstruct")
    given = {"dataset": "montgomerycxr", "model": "random_r18", "device": "cpu", "progress": False}
    small = {"steps": 2, "image_size": SIZE, "code_size": SIZE, "depth": 2, "layer": "layer3"}
    data, model, options, run = job.resolve({**given, **small, "images": 1}, "original")
    assert (model.norm, options.crop, options.quantize) == ("none", "top-left", "truncate")
    assert options.image_format == "source" and options.steps == 2  # given flags win
    result = run_reconstruct(job_roots, data, model, options, run)
    params = result.record["params"]
    assert params["normalization"] == "none" and params["preset"] == "original"
    assert result.record["preset_settings"]["crop"] == "top-left"
    image = result.record["images"][0]
    assert image["files"]["reconstruction"].endswith("reconstruction.png")  # PNG source
    jpeg = job_module._Image(0, "train/patient1/view1_frontal.jpg", "x", "00-view1")
    assert job_module._files(jpeg, options)["reconstruction"] == "00-view1/reconstruction.jpg"
    raw = np.load(outputs_folder(result.record_path) / image["files"]["raw"])
    saved = np.asarray(
        Image.open(outputs_folder(result.record_path) / image["files"]["reconstruction"])
    )
    expected = np.floor(np.clip(raw, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(saved, expected)


def test_named_items_and_bad_choices(job_roots: Roots) -> None:
    data = DataOptions("shenzhencxr")
    opened = data.open(job_roots)
    item = opened.manifest.table["path"].tolist()[3]
    chosen = job_module._choose(opened.manifest, dataclasses.replace(TINY, items=(item,)))
    assert [c.item for c in chosen] == [item] and chosen[0].row == 3
    with pytest.raises(ConfigError, match=r"--items: nope\.png not in the shenzhencxr manifest"):
        job_module._choose(opened.manifest, dataclasses.replace(TINY, items=("nope.png",)))
    with pytest.raises(ConfigError, match="--images 999: the test split of shenzhencxr has"):
        job_module._choose(opened.manifest, dataclasses.replace(TINY, images=999))
    with pytest.raises(ModelError, match=r"no intermediate layer 'layer9'.*layer4"):
        run_reconstruct(job_roots, data, MODEL, dataclasses.replace(TINY, layer="layer9"), RUN)
    assert job_module.CROPS == reconstruction.CROPS
    assert job_module.QUANTIZERS == reconstruction.QUANTIZERS


def test_images_go_through_in_groups_of_the_batch_size(job_roots: Roots) -> None:
    run = dataclasses.replace(RUN, batch_size=1)
    options = dataclasses.replace(TINY, steps=2)
    result = run_reconstruct(job_roots, DataOptions("shenzhencxr"), MODEL, options, run)
    assert [image["group"] for image in result.record["images"]] == [0, 1]
    assert len(result.record["groups"]) == 2


class Killed(RuntimeError):
    pass


def test_a_killed_run_resumes_from_its_checkpoint(
    job_roots: Roots, finished, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = reconstruction.reconstruct

    def killed_at_step_3(*args, **kwargs):
        def kill(step: int, losses: list[float]) -> None:
            if step == 3:
                raise Killed

        return original(*args, **kwargs, on_step=kill)

    monkeypatch.setattr(reconstruction, "reconstruct", killed_at_step_3)
    with pytest.raises(Killed):
        run_reconstruct(job_roots, DataOptions("shenzhencxr"), MODEL, TINY, RUN)
    assert len(list((job_roots.cache / "reconstruction").iterdir())) == 1
    monkeypatch.setattr(reconstruction, "reconstruct", original)
    resumed = run_reconstruct(job_roots, DataOptions("shenzhencxr"), MODEL, TINY, RUN)
    for image, whole in zip(resumed.record["images"], finished.record["images"], strict=True):
        assert image["resumed_from"] == 2
        assert image["final_loss"] == whole["final_loss"]
        assert image["loss_curve"] == whole["loss_curve"]
