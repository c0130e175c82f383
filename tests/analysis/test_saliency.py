"""Occlusion saliency against a plain batch-1 reference written from the original's procedure
(docs/original-study.md#saliency), and BatchNorm statistics against true train-mode passes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from medtransfer.analysis.batchnorm import batchnorm_statistics
from medtransfer.analysis.saliency import (
    attentive_diffusion,
    map_size,
    occlusion_scores,
    saliency_map,
    window_positions,
)
from medtransfer.errors import ConfigError
from tests.support.checkpoints import randomize_batchnorm

pytestmark = pytest.mark.usefixtures("single_thread")


def small_net(seed: int = 0) -> nn.Module:
    """A few conv + BatchNorm layers and a global pool: (B, 3, H, W) -> (B, 16)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return randomize_batchnorm(net, affine=True).eval()


def reference_map(net: nn.Module, image: torch.Tensor, size: int) -> np.ndarray:
    """The original's compute_saliency_map: one batch-1 pass per window, scores added to
    every pixel of the window, divided by size², cropped to [size-1, H-size+1)."""
    _, height, width = image.shape
    with torch.no_grad():
        reference = net(image.unsqueeze(0)).squeeze(0).numpy()
    magnitude = np.sqrt((reference**2).sum())
    scores = np.zeros((height, width))
    for i in range(1 + height - size):
        for j in range(1 + width - size):
            occluded = image.clone()
            occluded[:, i : i + size, j : j + size] = 0
            with torch.no_grad():
                feature = net(occluded.unsqueeze(0)).squeeze(0).numpy()
            score = np.sqrt(((reference - feature) ** 2).sum()) / magnitude
            scores[i : i + size, j : j + size] += score
    scores /= size**2
    return scores[size - 1 : height - size + 1, size - 1 : width - size + 1]


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(3, 21, 19, generator=torch.Generator().manual_seed(1))


def our_map(net: nn.Module, image: torch.Tensor, patch: int, *, batch_size: int = 7) -> np.ndarray:
    scores = occlusion_scores(net, image, patch=patch, batch_size=batch_size)
    return saliency_map(scores, tuple(image.shape[1:]), patch=patch)


def test_batched_map_equals_the_batch_one_reference(image: torch.Tensor) -> None:
    net = small_net()
    ours = our_map(net, image, 4)
    expected = reference_map(net, image, 4)
    assert ours.shape == expected.shape == (21 - 6, 19 - 6)
    assert np.abs(ours - expected).max() <= 1e-5
    assert ours.std() > 0  # not a constant map that would pass any comparison


def test_resnet18_map_equals_the_reference_at_every_batch_size() -> None:
    torch.manual_seed(0)
    net = randomize_batchnorm(resnet18(num_classes=8), affine=True).eval()
    image = torch.rand(3, 14, 14, generator=torch.Generator().manual_seed(2))
    expected = reference_map(net, image, 5)
    for batch_size in (3, 64):
        assert np.abs(our_map(net, image, 5, batch_size=batch_size) - expected).max() <= 1e-5


def test_the_original_geometry_is_a_224_map_of_a_242_image() -> None:
    assert map_size(242, 10) == 224
    positions = window_positions(242, 10)
    assert (positions[0], positions[-1], len(positions)) == (0, 232, 233)
    with pytest.raises(ConfigError, match="at least 19 px"):
        window_positions(18, 10)
    with pytest.raises(ConfigError, match="at least 1"):
        window_positions(32, 2, 0)


def test_strided_scores_are_the_stride_one_scores_at_the_positions_they_keep(
    image: torch.Tensor,
) -> None:
    net = small_net(1)
    full = occlusion_scores(net, image, patch=3, batch_size=50)
    strided = occlusion_scores(net, image, patch=3, stride=4, batch_size=50)
    rows, cols = window_positions(21, 3, 4), window_positions(19, 3, 4)
    assert list(rows) == [0, 4, 8, 12, 16, 18] and list(cols) == [0, 4, 8, 12, 16]
    np.testing.assert_allclose(strided, full[np.ix_(rows, cols)], atol=1e-6)
    approximate = saliency_map(strided, (21, 19), patch=3, stride=4)
    assert approximate.shape == saliency_map(full, (21, 19), patch=3).shape == (17, 15)


def test_interpolation_of_a_linear_score_field_is_exact() -> None:
    rows, cols = window_positions(30, 2, 4), window_positions(30, 2, 4)
    field = np.add.outer(0.5 * np.arange(29.0), 0.25 * np.arange(29.0))  # linear in (i, j)
    coarse = field[np.ix_(rows, cols)]
    np.testing.assert_allclose(
        saliency_map(coarse, (30, 30), patch=2, stride=4),
        saliency_map(field, (30, 30), patch=2),
        atol=1e-12,
    )


def test_an_interrupted_run_resumes_where_it_stopped(image: torch.Tensor) -> None:
    net = small_net(2)
    complete = occlusion_scores(net, image, patch=4, batch_size=16).ravel()
    saved: list[np.ndarray] = []

    def interrupt(done: int, total: int, scores: np.ndarray) -> None:
        if done >= 48:
            saved.append(scores.copy())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        occlusion_scores(net, image, patch=4, batch_size=16, progress=interrupt)
    assert np.isnan(saved[0]).sum() == len(complete) - 48
    seen: list[int] = []
    resumed = occlusion_scores(
        net,
        image,
        patch=4,
        batch_size=16,
        done=saved[0],
        progress=lambda done, total, scores: seen.append(done),
    )
    assert seen[0] == 64  # the first batch after the 48 finished windows
    np.testing.assert_allclose(resumed.ravel(), complete, atol=1e-6)


def test_attentive_diffusion_counts_pixels_strictly_above_the_mean() -> None:
    saliency = np.zeros((10, 10))
    saliency[:3, :] = 1.0  # 30 pixels at 1, mean 0.3
    assert attentive_diffusion(saliency) == 30.0
    assert attentive_diffusion(np.ones((4, 4))) == 0.0


def train_mode_batch_one(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """True train-mode passes, one image at a time, on a copy of ``net``."""
    twin = copy.deepcopy(net).train()
    with torch.no_grad():
        return torch.cat([twin(x.unsqueeze(0)) for x in images])


def test_per_sample_statistics_equal_train_mode_passes_of_one_image() -> None:
    torch.manual_seed(3)
    net = randomize_batchnorm(resnet18(num_classes=8), affine=True).eval()
    images = torch.rand(5, 3, 64, 64)
    running = [m.running_mean.clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.inference_mode(), batchnorm_statistics(net, "per-sample"):
        batched = net(images)
    expected = train_mode_batch_one(net, images)
    assert (batched - expected).abs().max() <= 1e-5
    with torch.inference_mode():
        assert (net(images) - expected).abs().max() > 1e-2  # eval mode differs: a real test
    after = [m.running_mean for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))
    assert all("forward" not in m.__dict__ for m in net.modules())


def test_batch_statistics_equal_a_train_mode_pass_of_the_whole_batch() -> None:
    net = small_net(4)
    images = torch.rand(6, 3, 12, 12)
    with torch.inference_mode(), batchnorm_statistics(net, "batch"):
        batched = net(images)
    twin = copy.deepcopy(net).train()
    with torch.no_grad():
        expected = twin(images)
    assert (batched - expected).abs().max() <= 1e-5


def test_statistics_that_cannot_be_computed_are_clear_errors() -> None:
    net = small_net(5)
    with (
        pytest.raises(ConfigError, match="larger --image-size"),
        batchnorm_statistics(net, "per-sample"),
    ):
        net(torch.rand(2, 3, 1, 1))
    with pytest.raises(ConfigError, match="Unknown BatchNorm mode"), batchnorm_statistics(net, "x"):
        pass

    class Custom(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    with (
        pytest.raises(ConfigError, match="Custom"),
        batchnorm_statistics(nn.Sequential(Custom(3)), "per-sample"),
    ):
        pass
