"""The model catalog: names, aliases, and consistent entries."""

from __future__ import annotations

import pytest

from medtransfer.errors import ModelError
from medtransfer.models.archs import get_arch
from medtransfer.models.catalog import get_model_spec, list_models


def test_lookup_is_case_insensitive_and_knows_aliases() -> None:
    assert get_model_spec("SUPERVISED").name == "supervised_r50"
    assert get_model_spec(" Supervised_R18 ").arch == "resnet18"
    assert get_model_spec("efficientnet_lite0").name == "efficientnet-lite0"


@pytest.mark.parametrize(
    ("name", "arch", "dim", "norm", "source"),
    [
        ("random_r50", "resnet50", 2048, "imagenet", "random"),
        ("random_r18", "resnet18", 512, "imagenet", "random"),
        ("random_d121", "densenet121", 1024, "imagenet", "random"),
        ("supervised_r50", "resnet50", 2048, "imagenet", "torchvision"),
        ("supervised_r18", "resnet18", 512, "imagenet", "torchvision"),
        ("supervised_d121", "densenet121", 1024, "imagenet", "torchvision"),
        ("efficientnet-lite0", "tf_efficientnet_lite0", 1280, "half", "package"),
    ],
)
def test_entries(name: str, arch: str, dim: int, norm: str, source: str) -> None:
    spec = get_model_spec(name)
    assert (spec.arch, spec.feature_dim, spec.normalization, spec.source) == (
        arch,
        dim,
        norm,
        source,
    )


def test_torchvision_urls_carry_their_hash_prefix() -> None:
    spec = get_model_spec("supervised_r50")
    assert spec.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert spec.filename == "resnet50-0676ba61.pth" and spec.sha256_prefix == "0676ba61"
    assert get_model_spec("supervised_r18").sha256_prefix == "f37072fd"
    assert get_model_spec("supervised_d121").sha256_prefix == "a639ec97"


def test_list_models_is_consistent() -> None:
    specs = list_models()
    names = [name.lower() for spec in specs for name in spec.names]
    assert len(names) == len(set(names))
    for spec in specs:
        assert spec.feature_dim == get_arch(spec.arch).feature_dim
        assert get_model_spec(spec.name) is spec


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError) as info:
        get_model_spec("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for spec in list_models():
        assert spec.name in message
