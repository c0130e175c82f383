"""The architecture registry: builders, widths, heads, key renaming and named layers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from medtransfer.errors import ModelError
from medtransfer.models.archs import (
    ARCHS,
    ArchSpec,
    build_trunk,
    converted_archs,
    get_arch,
    prepare_state_dict,
)
from medtransfer.models.catalog import list_models
from medtransfer.models.seeding import seeded


@pytest.fixture(scope="module", params=list(ARCHS), ids=list(ARCHS))
def built(request: pytest.FixtureRequest) -> Iterator[tuple[ArchSpec, nn.Module]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with seeded(0):
        trunk = build_trunk(request.param)
    yield get_arch(request.param), trunk.eval()
    torch.set_num_threads(threads)


def test_trunk_gives_the_feature_width_and_has_no_head(built: tuple[ArchSpec, nn.Module]) -> None:
    spec, trunk = built
    with torch.no_grad():
        assert trunk(torch.rand(2, 3, 32, 32)).shape == (2, spec.feature_dim)
    assert not any(k.startswith(spec.classifier_prefix) for k in trunk.state_dict())


def test_every_named_layer_is_a_module_of_the_trunk(built: tuple[ArchSpec, nn.Module]) -> None:
    spec, trunk = built
    modules = dict(trunk.named_modules())
    for name, tap in spec.layers.items():
        assert tap.module in modules, name
    assert list(spec.layers)[-1] == "pooled"


def test_prepare_state_dict_drops_the_head_and_fits_the_trunk(
    built: tuple[ArchSpec, nn.Module],
) -> None:
    spec, trunk = built
    state = dict(trunk.state_dict())
    head = {f"{spec.classifier_prefix}weight": torch.zeros(10, spec.feature_dim)}
    assert prepare_state_dict({**state, **head}, spec.name).keys() == state.keys()


def test_legacy_densenet_keys_are_renamed() -> None:
    legacy = {
        "features.denseblock1.denselayer1.norm.1.weight": torch.zeros(1),
        "features.denseblock1.denselayer1.conv.2.weight": torch.zeros(1),
        "features.norm5.weight": torch.zeros(1),
        "classifier.bias": torch.zeros(1),
    }
    assert list(prepare_state_dict(legacy, "densenet121")) == [
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer1.conv2.weight",
        "features.norm5.weight",
    ]
    assert get_arch("resnet18").remap_keys is None


def test_catalog_reads_widths_and_labels_from_the_registry() -> None:
    for spec in list_models():
        arch = get_arch(spec.arch)
        assert spec.feature_dim == arch.feature_dim
        if spec.source in ("random", "torchvision"):
            assert spec.description.startswith(f"{arch.label}, ")


def test_converters_make_the_torchvision_archs() -> None:
    assert converted_archs() == ("resnet50", "resnet18", "densenet121")


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match=re.escape(", ".join(ARCHS))):
        get_arch("vgg16")
    with pytest.raises(ModelError, match="vgg16"):
        build_trunk("vgg16")
