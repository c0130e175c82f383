"""Input normalisation modules, the histogram one against a direct numpy recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.errors import ModelError
from medtransfer.models.normalization import NORMALIZATIONS, make_normalization


def numpy_histogram_normalize(image: np.ndarray) -> np.ndarray:
    """The original's HistogramNormalize, written out with numpy: (C, H, W) -> (C, H, W)."""
    flat = image.flatten()
    hist, bins = np.histogram(flat, 256, density=True)
    cdf = hist.cumsum()
    cdf = 255 * cdf / cdf[-1]
    return np.interp(flat, bins[:-1], cdf).reshape(image.shape).astype(np.float32)


def test_imagenet_and_half() -> None:
    x = torch.rand(2, 3, 5, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(make_normalization("imagenet")(x), (x - mean) / std)
    torch.testing.assert_close(make_normalization("half")(x), x * 2 - 1)
    assert make_normalization("none")(x) is x


def test_constants_are_not_in_state_dicts() -> None:
    assert make_normalization("imagenet").state_dict() == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_matches_numpy(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, 24, 20, generator=generator)
    images[1] = images[1] ** 3  # skewed histogram
    images[2] = (images[2] * 255).round() / 255  # 8-bit values, many ties
    images[2, :, :4] = images[2, :, 4:8]
    out = make_normalization("histogram")(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    for image, got in zip(images, out, strict=True):
        expected = numpy_histogram_normalize(image.numpy())
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-3, rtol=0)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0 + 1e-3


def test_histogram_of_grey_replicated_and_constant_images() -> None:
    grey = torch.rand(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    constant = torch.full((1, 3, 8, 8), 0.25)
    for images in (grey, constant):
        got = make_normalization("histogram")(images)[0].numpy()
        np.testing.assert_allclose(got, numpy_histogram_normalize(images[0].numpy()), atol=1e-3)


def test_histogram_is_per_image() -> None:
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8) * 0.1
    norm = make_normalization("histogram")
    torch.testing.assert_close(norm(torch.cat([a, b]))[1:], norm(b))


def test_unknown_kind() -> None:
    with pytest.raises(ModelError, match="sepia") as info:
        make_normalization("sepia")
    for kind in NORMALIZATIONS:
        assert kind in str(info.value)
