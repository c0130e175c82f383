"""LPIPS equals the lpips package on the same tensors and weights; SSIM and MS-SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.analysis.perceptual import (
    LPIPS_NETS,
    build_lpips,
    load_trunk,
    lpips_distance,
    ms_ssim,
    ssim,
)
from medtransfer.errors import ModelError
from tests.support.lpips_trunks import reference_lpips, standin_state

IMAGES = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
OTHERS = IMAGES + 0.2 * torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(8))


@pytest.mark.parametrize("net", LPIPS_NETS)
def test_lpips_equals_the_package_called_directly(net: str) -> None:
    ours = build_lpips(net, standin_state(net))
    reference = reference_lpips(net)
    others = OTHERS.clamp(0, 1)
    with torch.no_grad():
        expected = reference(IMAGES * 2 - 1, others * 2 - 1).reshape(-1)
    got = lpips_distance(ours, IMAGES, others)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert got.shape == (3,) and bool((got > 0).all())
    assert lpips_distance(ours, IMAGES, IMAGES).abs().max() < 1e-6
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training


def test_a_trunk_file_of_the_wrong_layout_is_named() -> None:
    state = dict(standin_state("squeeze"))
    del state["features.3.squeeze.weight"]
    model = build_lpips("squeeze", standin_state("squeeze"))
    with pytest.raises(ModelError, match=r"/w/squeeze.pth .*missing features.3.squeeze.weight"):
        load_trunk(model.net, state, what="/w/squeeze.pth")
    state = {**standin_state("squeeze"), "features.0.bias": torch.zeros(3)}
    with pytest.raises(ModelError, match=r"features.0.bias \(3,\) \(expected \(64,\)\)"):
        load_trunk(model.net, state, what="/w/squeeze.pth")
    with pytest.raises(ModelError, match="Unknown LPIPS net 'resnet'"):
        build_lpips("resnet", {})


def test_ssim_and_ms_ssim() -> None:
    from skimage.metrics import structural_similarity

    big = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(9))
    noisy = big + 0.1 * torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(10))
    noisy = noisy.clamp(0, 1)
    torch.testing.assert_close(ssim(big, big), torch.ones(2))
    scores = ssim(big, noisy)
    # scikit-image with the same Gaussian window (it pads where pytorch-msssim crops)
    expected = [
        structural_similarity(
            a.permute(1, 2, 0).numpy(),
            b.permute(1, 2, 0).numpy(),
            channel_axis=2,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(big, noisy, strict=True)
    ]
    np.testing.assert_allclose(scores.numpy(), expected, atol=0.01)
    multi = ms_ssim(big, noisy)
    assert multi is not None and multi.shape == (2,) and bool((multi < 1).all())
    torch.testing.assert_close(ms_ssim(big, big), torch.ones(2))
    assert ms_ssim(big[:, :, :160, :160], noisy[:, :, :160, :160]) is None
