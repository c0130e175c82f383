"""Feature inversion: the loss falls, a killed run resumes to the same result, several
images at once are the same computation as one at a time, and the seed fixes the start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.analysis.dip import SkipConfig
from medtransfer.analysis.reconstruction import (
    CROPS,
    QUANTIZERS,
    ReconstructionConfig,
    crop,
    quantize,
    reconstruct,
    seeded_start,
)
from medtransfer.errors import ConfigError, ProtocolError
from medtransfer.models.archs import build_trunk
from medtransfer.models.backbone import Backbone
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.intermediate import intermediate_outputs
from medtransfer.models.seeding import seeded

SIZE = 32
CONFIG = ReconstructionConfig(
    steps=24,
    image_size=SIZE,
    code_size=SIZE,
    curve_every=1,
    checkpoint_every=5,
    generator=SkipConfig().shallower(3),
)


@pytest.fixture(scope="module")
def features():
    """layer3 of a seeded ResNet-18 (ImageNet normalisation inside), frozen."""
    with seeded(0):
        trunk = build_trunk("resnet18")
    spec = get_model_spec("random_r18")
    backbone = Backbone(spec, trunk, weights_sha256="", normalization="imagenet").eval()
    backbone.requires_grad_(False)
    return lambda images: intermediate_outputs(backbone, images, ["layer3"])["layer3"]


@pytest.fixture(scope="module")
def targets() -> torch.Tensor:
    """Two synthetic images: smooth blobs and stripes, (2, 3, 32, 32) in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    blob = torch.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2) * 4)
    stripes = 0.5 + 0.5 * torch.sin(6 * x + 3 * y)
    first = torch.stack([blob, stripes, 1 - blob])
    second = torch.stack([stripes, blob, blob * stripes])
    return torch.stack([first, second]).clamp(0, 1)


@pytest.fixture(scope="module")
def whole(features, targets, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run of both images, checkpointing every 5 steps."""
    return reconstruct(
        features, targets, CONFIG, checkpoint_dir=tmp_path_factory.mktemp("whole"), progress=False
    )


def test_the_feature_loss_falls_step_after_step_on_average(whole) -> None:
    assert whole.curve_steps == list(range(1, 25))
    for curve, final in zip(whole.curve, whole.final_loss, strict=True):
        blocks = [float(np.mean(curve[i : i + 6])) for i in range(0, 24, 6)]
        assert blocks == sorted(blocks, reverse=True) and len(set(blocks)) == 4
        assert final < curve[-1] < curve[0] / 4
    assert whole.outputs.shape == (2, 3, SIZE, SIZE) and whole.crops.shape == (2, 3, SIZE, SIZE)
    assert whole.parameters > 0 and whole.steps_run == 24 and whole.resumed_from is None


class Killed(RuntimeError):
    pass


def test_a_killed_run_resumes_to_what_an_uninterrupted_run_ends_with(
    features, targets, whole, tmp_path: Path
) -> None:
    def kill(step: int, losses: list[float]) -> None:
        if step == 13:
            raise Killed

    with pytest.raises(Killed):
        reconstruct(
            features, targets, CONFIG, checkpoint_dir=tmp_path, progress=False, on_step=kill
        )
    resumed = reconstruct(features, targets, CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 10 and resumed.steps_run == 14
    assert torch.equal(resumed.outputs, whole.outputs)
    assert resumed.curve == whole.curve and resumed.final_loss == whole.final_loss

    again = reconstruct(features, targets, CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert again.resumed_from == 24 and again.steps_run == 0  # finished: nothing to train
    assert torch.equal(again.outputs, whole.outputs)

    other = dataclasses.replace(CONFIG, lr=2e-3)
    with pytest.raises(
        ProtocolError, match=r"reconstruction checkpoint .* belongs to a run with other settings"
    ):
        reconstruct(features, targets, other, checkpoint_dir=tmp_path, progress=False)


def test_images_together_are_the_same_computation_as_one_at_a_time(
    features, targets, whole
) -> None:
    """Same start and same first loss up to rounding; then equally good results.

    A batched backbone (here at 32 px) rounds differently from a single one, and Adam
    steps every parameter by about lr in the direction of its gradient's sign, even where
    that gradient is only rounding noise (conv biases before BatchNorm, whose true gradient
    is 0): trajectories part after a few steps, as with a change of CPU thread count
    (docs/analyses/reconstruction.md). The members' exact independence (outputs and
    gradients) is tested in test_dip.py."""
    alone = reconstruct(features, targets[1:], CONFIG, progress=False)
    assert whole.curve[1][0] == pytest.approx(alone.curve[0][0], rel=1e-6)
    assert whole.final_loss[1] == pytest.approx(alone.final_loss[0], rel=0.1)
    assert alone.final_loss[0] < alone.curve[0][0] / 4


def test_the_seed_fixes_the_code_and_every_member_starts_the_same() -> None:
    code, generator = seeded_start(CONFIG, 2)
    again, _ = seeded_start(CONFIG, 2)
    other, _ = seeded_start(dataclasses.replace(CONFIG, seed=1), 2)
    assert code.shape == (2, 32, SIZE, SIZE) and torch.equal(code, again)
    assert torch.equal(code[0], code[1]) and not torch.equal(code, other)
    assert code.min() >= 0 and code.max() < 0.1  # U[0, 1) * 0.1
    first, second = generator.member_state_dict(0), generator.member_state_dict(1)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_crops_and_pixels() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert CROPS == ("centre", "top-left") and QUANTIZERS == ("round", "truncate")
    assert torch.equal(crop(images, 4, "top-left"), images[:, :, :4, :4])
    assert torch.equal(crop(images, 4, "centre"), images[:, :, 2:6, 2:6])
    values = torch.tensor([-0.5, 0.0, 0.5, 0.9999, 1.5]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert quantize(values, "round")[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert quantize(values, "truncate")[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255]


def test_settings_that_cannot_work_are_refused(features, targets) -> None:
    with pytest.raises(ConfigError, match="multiple of 8"):
        dataclasses.replace(CONFIG, code_size=36)
    # the deepest scale at 1x1: train-mode BatchNorm over one image would fail mid-run
    with pytest.raises(ConfigError, match=r"scales 1x1 pixels.*--code-size 16 or more"):
        dataclasses.replace(CONFIG, code_size=8, image_size=8)
    with pytest.raises(ConfigError, match="must fit"):
        dataclasses.replace(CONFIG, image_size=40)
    with pytest.raises(ConfigError, match="crop size is 32"):
        reconstruct(features, targets[:, :, :16, :16], CONFIG, progress=False)
