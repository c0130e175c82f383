"""Named intermediate outputs: shapes, values, gradients, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from medtransfer.config import Roots
from medtransfer.errors import ModelError
from medtransfer.models.archs import build_trunk
from medtransfer.models.backbone import Backbone
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.intermediate import intermediate_outputs, layer_names, resolve_layer
from medtransfer.models.loader import load_backbone
from medtransfer.models.seeding import seeded

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(21))


def test_resnet18_layer_shapes_at_64_px(roots: Roots) -> None:
    backbone = load_backbone("random_r18", roots)
    with torch.no_grad():
        outputs = intermediate_outputs(backbone, IMAGES, layer_names("resnet18"))
    assert {name: tuple(t.shape) for name, t in outputs.items()} == {
        "conv1": (2, 64, 32, 32),
        "bn1": (2, 64, 32, 32),
        "relu": (2, 64, 32, 32),
        "maxpool": (2, 64, 16, 16),
        "layer1": (2, 64, 16, 16),
        "layer2": (2, 128, 8, 8),
        "layer3": (2, 256, 4, 4),
        "layer4": (2, 512, 2, 2),
        "avgpool": (2, 512, 1, 1),
        "pooled": (2, 512),
    }


def test_values_survive_in_place_ops_and_the_forward_is_unchanged(roots: Roots) -> None:
    backbone = load_backbone("random_r18", roots)
    with torch.no_grad():
        expected = backbone(IMAGES)
        outputs = intermediate_outputs(backbone, IMAGES, ["bn1", "relu", "layer4", "pooled"])
        after = backbone(IMAGES)
    assert bool((outputs["bn1"] < 0).any())  # not overwritten by the in-place ReLU
    torch.testing.assert_close(outputs["relu"], outputs["bn1"].clamp(min=0), rtol=0, atol=0)
    torch.testing.assert_close(outputs["pooled"], expected, rtol=0, atol=0)
    torch.testing.assert_close(outputs["layer4"].mean(dim=(2, 3)), expected)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)  # no hook left behind
    assert all(not module._forward_hooks for module in backbone.modules())


def test_densenet_exposes_norm5_and_the_map_it_pools(roots: Roots) -> None:
    backbone = load_backbone("random_d121", roots)
    with torch.no_grad():
        expected = backbone(IMAGES)
        outputs = intermediate_outputs(
            backbone, IMAGES, ["features.denseblock4", "features.norm5", "relu", "pooled"]
        )
    assert outputs["features.denseblock4"].shape == (2, 1024, 2, 2)
    assert bool((outputs["features.norm5"] < 0).any())
    post = outputs["features.norm5"].clamp(min=0)
    torch.testing.assert_close(outputs["relu"], post, rtol=0, atol=0)
    torch.testing.assert_close(outputs["relu"].mean(dim=(2, 3)), expected)
    torch.testing.assert_close(outputs["pooled"], expected, rtol=0, atol=0)


def test_efficientnet_lite0_stage_outputs() -> None:
    with seeded(0):
        trunk = build_trunk("tf_efficientnet_lite0")
    spec = get_model_spec("efficientnet-lite0")
    backbone = Backbone(spec, trunk, weights_sha256="", normalization="half").eval()
    stages = [f"blocks.{i}" for i in range(7)]
    with torch.no_grad():
        outputs = intermediate_outputs(backbone, IMAGES, [*stages, "bn2", "pooled"])
    assert [outputs[name].shape[1] for name in stages] == [16, 24, 40, 80, 112, 192, 320]
    assert outputs["bn2"].shape == (2, 1280, 2, 2)
    assert outputs["pooled"].shape == (2, 1280)


def test_outputs_take_gradients(roots: Roots) -> None:
    backbone = load_backbone("random_r18", roots)
    outputs = intermediate_outputs(backbone, IMAGES, ["layer4", "pooled"])
    (grad,) = torch.autograd.grad(outputs["pooled"].sum(), outputs["layer4"])
    torch.testing.assert_close(grad, torch.full_like(grad, 1 / 4))  # mean over 2 x 2


def test_unknown_layer_lists_the_valid_names(roots: Roots) -> None:
    backbone = load_backbone("random_r18", roots)
    with pytest.raises(ModelError) as info:
        intermediate_outputs(backbone, IMAGES, ["layer4", "layer5"])
    message = str(info.value)
    assert "'layer5'" in message
    for name in layer_names("resnet18"):
        assert name in message
    assert all(not module._forward_hooks for module in backbone.modules())


def test_the_original_studys_names_are_aliases(roots: Roots) -> None:
    assert resolve_layer("densenet121", "layer4") == "features.denseblock4"
    assert resolve_layer("densenet121", "transition2") == "features.transition2"
    assert resolve_layer("resnet50", "fc") == "pooled"
    assert resolve_layer("resnet18", "layer4") == "layer4"
    backbone = load_backbone("random_r18", roots)
    with torch.no_grad():
        outputs = intermediate_outputs(backbone, IMAGES[:1], ["fc", "pooled", "relu1"])
    assert list(outputs) == ["fc", "pooled", "relu1"]
    torch.testing.assert_close(outputs["fc"], outputs["pooled"], rtol=0, atol=0)
    assert outputs["relu1"].shape == (1, 64, 32, 32)
    with pytest.raises(ModelError, match=r"no intermediate layer 'layer5'.*layer4 \(features"):
        resolve_layer("densenet121", "layer5")


def test_models_outside_the_registry_have_no_named_layers(roots: Roots) -> None:
    spec = dataclasses.replace(get_model_spec("random_r18"), arch="timm:resnet18")
    backbone = Backbone(spec, build_trunk("resnet18"), weights_sha256="", normalization="none")
    with pytest.raises(ModelError, match=r"resnet50, resnet18.*timm:resnet18"):
        intermediate_outputs(backbone, IMAGES, ["layer4"])
