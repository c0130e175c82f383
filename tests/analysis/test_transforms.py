"""The invariance transforms: the original's grids and default k
(docs/original-study.md#invariance), clear errors for a k a grid cannot honour, views at a
stated resolution, and the elastic deformation against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from medtransfer.analysis.elastic import KERNEL_SIZE, affine_from_points, elastic_deform
from medtransfer.analysis.transforms import (
    TRANSFORM_NAMES,
    TRANSFORMS,
    ViewPlan,
    get_transform,
    resolve_k,
)
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A 600 × 520 RGB picture with structure everywhere (no flat regions)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:520, 0:600]
    base = np.stack([x % 37 * 6, y % 23 * 11, (x + y) % 51 * 5], axis=-1)
    noise = rng.integers(0, 20, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_every_transform_of_the_original_with_its_default_k() -> None:
    assert (
        *("rotation", "translation", "scale", "shear", "resized_crop", "h_flip", "v_flip"),
        *("deform", "grayscale", "brightness", "contrast", "saturation", "hue", "blur"),
        *("sharpness", "invert", "equalize", "posterize"),
    ) == TRANSFORM_NAMES
    binary = {"h_flip", "v_flip", "grayscale", "invert", "equalize"}
    for name, spec in TRANSFORMS.items():
        expected = 2 if name in binary else 7 if name == "posterize" else 256
        assert spec.default_k == expected
        assert len(ViewPlan(name, resolve_k(name, None)).values) == expected


def test_the_job_offers_every_transform() -> None:
    from medtransfer.jobs.invariance_options import _NAMES

    assert _NAMES == TRANSFORM_NAMES


def test_grids_are_the_original_values() -> None:
    rotation = ViewPlan("rotation", 20).values
    assert rotation[:3] == [0.0, 18.0, 36.0] and rotation[-1] == 342.0
    steps = sorted({t[0] for t in ViewPlan("translation", 256).values})
    assert steps == [float(v) for v in range(-16, 16, 2)]
    assert ViewPlan("hue", 5).values == [-0.5, -0.25, 0.0, 0.25, 0.5]
    boxes = ViewPlan("resized_crop", 256).values
    assert sorted({b[0] for b in boxes}) == pytest.approx([0, 21.3333, 42.6667, 64], abs=1e-3)
    assert sorted({b[2] for b in boxes}) == pytest.approx([64, 106.6667, 149.3333, 192], abs=1e-3)
    assert ViewPlan("deform", 10).values == [10, 15, 21, 27, 32, 38, 44, 50, 10, 15]
    assert ViewPlan("posterize", 7).values == [1, 2, 3, 4, 5, 6, 7]
    assert ViewPlan("shear", 4).values == [
        [-160.0, -160.0],
        [-160.0, 0.0],
        [0.0, -160.0],
        [0.0, 0.0],
    ]


@pytest.mark.parametrize(
    ("name", "k", "rule"),
    [
        ("translation", 20, "perfect square"),
        ("shear", 20, "perfect square"),
        ("resized_crop", 20, "fourth power"),
        ("h_flip", 3, "k = 2"),
        ("posterize", 8, "bits 1..7"),
        ("deform", 257, "256 values"),
        ("rotation", 0, "k >= 1"),
    ],
)
def test_a_k_the_grid_cannot_honour_is_a_clear_error(name: str, k: int, rule: str) -> None:
    with pytest.raises(ConfigError, match=f"--k {k} does not fit --transform {name}.*{rule}"):
        resolve_k(name, k)
    with pytest.raises(ConfigError, match="Unknown --transform 'spin'"):
        get_transform("spin")


def test_identity_view_equals_the_clean_image(picture: Image.Image) -> None:
    clean = Preprocessing(32, resize="ratio")(picture)
    for name, k in [("rotation", 4), ("h_flip", 2), ("translation", 16), ("sharpness", 3)]:
        plan = ViewPlan(name, k, crop=32, side=37)
        views = plan.views(picture)
        assert views.shape == (k, 3, 32, 32)
        assert plan.identity is not None
        assert torch.equal(views[plan.identity], clean), name
        assert all(not torch.equal(v, clean) for i, v in enumerate(views) if i != plan.identity)


def best_shift(view: torch.Tensor, wide: torch.Tensor) -> int:
    """The horizontal shift (pixels of ``wide``) at which ``view`` matches a window of it."""
    top, left = (wide.shape[1] - 224) // 2, (wide.shape[2] - 224) // 2
    errors = [
        (view[:, :, :150] - wide[:, top : top + 224, left + s : left + s + 150]).abs().mean()
        for s in range(0, 33)
    ]
    return int(np.argmin(errors))


def test_transforms_act_at_the_stated_resolution(picture: Image.Image) -> None:
    plan = ViewPlan("translation", 16, crop=224, side=256)
    index = plan.values.index([-16.0, 0.0])
    wide = TF.to_tensor(TF.resize(picture, 256))
    resized = plan.views(picture)[index]
    full = ViewPlan("translation", 16, crop=224, side=256, at="full").views(picture)[index]
    assert best_shift(resized, wide) in (16, 17)  # 16 px of the 256-px image
    assert best_shift(full, wide) in (7, 8, 9)  # 16 px of the 520-px original: about 8 at 256
    crop = ViewPlan("resized_crop", 16, crop=32, side=37, at="full").views(picture)
    assert crop.shape == (16, 3, 32, 32)


def test_every_transform_makes_views_in_range(picture: Image.Image) -> None:
    small = picture.resize((40, 36))
    for name in TRANSFORM_NAMES:
        k = 2 if name in ("h_flip", "v_flip", "grayscale", "invert", "equalize") else 4
        k = 16 if name == "resized_crop" else k
        views = ViewPlan(name, k, crop=24, side=27, seed=3).views(small, image_index=1)
        assert views.shape == (k, 3, 24, 24) and views.dtype == torch.float32
        assert views.min() >= 0 and views.max() <= 1
        assert len({v.numpy().tobytes() for v in views}) > 1, name


def test_deform_views_are_seeded_per_image() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    plan = ViewPlan("deform", 2, crop=24, side=27, seed=5)
    assert torch.equal(plan.views(image, 0), plan.views(image, 0))
    assert not torch.equal(plan.views(image, 0), plan.views(image, 1))


def test_the_elastic_transform_without_displacement_is_the_identity() -> None:
    image = np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    state = np.random.RandomState(0)
    out = elastic_deform(image, 10.0, state, alpha=0.0, alpha_affine=0.0)
    np.testing.assert_array_equal(out, image)


def test_the_random_affine_step_matches_pil_inside_the_image() -> None:
    y, x = np.mgrid[0:48, 0:48]
    image = np.sin(x / 5.0) + np.cos(y / 7.0)  # smooth: sub-pixel conventions barely matter
    out = elastic_deform(image, 10.0, np.random.RandomState(4), alpha=0.0, alpha_affine=3.0)
    state = np.random.RandomState(4)
    q, c = 48 // 3, 24
    source = np.array([[c + q, c + q], [c + q, c - q], [c - q, c - q]], dtype=np.float64)
    target = source + state.uniform(-3.0, 3.0, size=(3, 2)).astype(np.float32)
    inverse = np.linalg.inv(np.vstack([affine_from_points(source, target), [0, 0, 1]]))
    warped = Image.fromarray(image.astype(np.float32), mode="F").transform(
        (48, 48), Image.Transform.AFFINE, tuple(inverse[:2].ravel()), Image.Resampling.BILINEAR
    )
    inside = (slice(8, 40), slice(8, 40))
    np.testing.assert_allclose(out[inside], np.asarray(warped)[inside], atol=0.02)
    assert np.abs(out - image)[inside].max() > 0.1  # it did move


def test_the_displacement_field_is_smoothed_uniform_noise() -> None:
    height, width, sigma, alpha = 40, 50, 3.0, 4.0
    ramp = np.tile(np.arange(width, dtype=np.float64), (height, 1))
    out = elastic_deform(ramp, sigma, np.random.RandomState(7), alpha=alpha, alpha_affine=0.0)
    state = np.random.RandomState(7)
    state.uniform(-0.0, 0.0, size=(3, 2))  # the affine draw comes first
    noise = state.rand(height, width).astype(np.float32) * 2 - 1
    offsets = np.arange(KERNEL_SIZE) - KERNEL_SIZE // 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(kernel, kernel) / kernel.sum() ** 2
    padded = np.pad(noise, KERNEL_SIZE // 2, mode="reflect")  # reflect-101
    dx = np.array(
        [
            [
                (padded[i : i + KERNEL_SIZE, j : j + KERNEL_SIZE] * kernel).sum()
                for j in range(width)
            ]
            for i in range(height)
        ]
    )
    inside = (slice(2, -2), slice(12, -12))
    np.testing.assert_allclose(out[inside] - ramp[inside], alpha * dx[inside], atol=1e-4)
