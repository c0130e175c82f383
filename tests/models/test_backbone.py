"""Backbones: random, downloaded (from a local server) and user weights."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.config import Roots
from medtransfer.errors import DownloadError, ModelError
from medtransfer.models.archs import remap_legacy_densenet_keys
from medtransfer.models.backbone import Backbone
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.loader import load_backbone
from medtransfer.models.state_dicts import state_dict_sha256
from tests.support.checkpoints import randomize_batchnorm
from tests.support.http_server import FileServer, serve_directory

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _images(n: int = 2, size: int = 32, seed: int = 7) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reference_features(model: nn.Module, head: str, images: Tensor) -> Tensor:
    """Pooled features of a torchvision model: head replaced by identity, ImageNet-normalised."""
    setattr(model, head, nn.Identity())
    with torch.no_grad():
        return model.eval()((images - MEAN) / STD)


def _seeded_torchvision(arch: str, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    randomize_batchnorm(model)
    return model


def _save_named_by_hash(state: dict[str, Tensor], folder: Path, stem: str) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    tmp.rename(path)
    return path, digest


# --------------------------------------------------------------------------- random models


@pytest.mark.parametrize(("name", "dim"), [("random_r18", 512), ("random_r50", 2048)])
def test_random_resnets_give_pooled_features(roots: Roots, name: str, dim: int) -> None:
    backbone = load_backbone(name, roots)
    assert isinstance(backbone, Backbone) and not backbone.training
    assert backbone.feature_dim == dim and backbone.normalization == "imagenet"
    with torch.no_grad():
        assert backbone(_images()).shape == (2, dim)


def test_random_densenet_and_bn_stats_unchanged(roots: Roots) -> None:
    backbone = load_backbone("random_d121", roots)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        features = backbone(_images())
    assert features.shape == (2, 1024)
    assert float(features.min()) >= 0.0  # ReLU before pooling
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_random_init_is_seeded_and_leaves_global_rng_alone(roots: Roots) -> None:
    torch.manual_seed(1234)
    first = torch.rand(4)
    a = load_backbone("random_r18", roots, seed=0)
    second = torch.rand(4)
    torch.manual_seed(1234)
    torch.testing.assert_close(torch.cat([first, second]), torch.rand(8))

    b = load_backbone("random_r18", roots, seed=0)
    c = load_backbone("random_r18", roots, seed=1)
    assert a.weights_sha256 == b.weights_sha256 == state_dict_sha256(a.trunk.state_dict())
    assert a.weights_sha256 != c.weights_sha256
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_normalisation_is_sealed_and_no_norm_respected(roots: Roots) -> None:
    plain = load_backbone("random_r18", roots)
    raw = load_backbone("random_r18", roots, no_norm=True)
    assert raw.normalization == "none" and raw.weights_sha256 == plain.weights_sha256
    x = _images()
    with torch.no_grad():
        assert not torch.allclose(plain(x), raw(x))
        torch.testing.assert_close(plain(x), raw.trunk((x - MEAN) / STD))


def test_histogram_model_ignores_no_norm(roots: Roots) -> None:
    spec = dataclasses.replace(get_model_spec("random_r18"), normalization="histogram")
    hist = load_backbone(spec, roots, no_norm=True)
    assert hist.normalization == "histogram"
    x = _images()
    with torch.no_grad():
        assert not torch.allclose(hist(x), hist.trunk(x))


def test_bad_input_shape(roots: Roots) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        load_backbone("random_r18", roots)(torch.rand(2, 1, 32, 32))


# --------------------------------------------------------------------------- downloaded weights


@pytest.fixture
def resnet18_served(tmp_path: Path) -> Iterator[tuple[FileServer, Path, str, nn.Module]]:
    source = _seeded_torchvision("resnet18")
    path, digest = _save_named_by_hash(source.state_dict(), tmp_path / "served", "resnet18")
    with serve_directory(path.parent) as server:
        yield server, path, digest, source


def test_supervised_r18_downloads_checks_and_loads(
    roots: Roots,
    resnet18_served: tuple[FileServer, Path, str, nn.Module],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, path, digest, source = resnet18_served
    spec = dataclasses.replace(
        get_model_spec("supervised_r18"),
        url=server.url(path.name),
        filename=path.name,
        sha256_prefix=digest[:8],
    )
    backbone = load_backbone(spec, roots, progress=False)
    cached = roots.cache / "weights" / path.name
    assert cached.read_bytes() == path.read_bytes()
    assert backbone.weights_sha256 == digest and backbone.weights_path == cached
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), _reference_features(source, "fc", x))

    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")  # the cached copy needs no network
    assert load_backbone(spec, roots, progress=False).weights_sha256 == digest
    assert len(server.requests_for(path.name)) == 1


def test_supervised_offline_without_file_says_where_to_put_it(
    roots: Roots, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        load_backbone("supervised", roots)
    message = str(info.value)
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert str(roots.cache / "weights" / "resnet50-0676ba61.pth") in message


def test_supervised_uses_a_verified_torch_hub_copy(
    roots: Roots, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _seeded_torchvision("resnet18")
    hub = isolated_environment / "torch" / "hub" / "checkpoints"
    path, digest = _save_named_by_hash(source.state_dict(), hub, "resnet18")
    spec = dataclasses.replace(
        get_model_spec("supervised_r18"), filename=path.name, sha256_prefix=digest[:8]
    )
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    backbone = load_backbone(spec, roots)
    assert backbone.weights_path == path and backbone.weights_sha256 == digest


# --------------------------------------------------------------------------- user weights


def test_weights_file_for_resnet18_wrapped(roots: Roots, tmp_path: Path) -> None:
    source = _seeded_torchvision("resnet18")
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    backbone = load_backbone("random_r18", roots, weights=path)
    assert backbone.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), _reference_features(source, "fc", x))


def test_missing_and_extra_keys_are_named(roots: Roots, tmp_path: Path) -> None:
    state = _seeded_torchvision("resnet18").state_dict()
    del state["layer2.0.conv1.weight"]
    state["layer9.extra.weight"] = torch.zeros(1)
    state["bn1.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        load_backbone("supervised_r18", roots, weights=path)
    message = str(info.value)
    for needle in (str(path), "layer2.0.conv1.weight", "layer9.extra.weight", "bn1.weight"):
        assert needle in message


def test_missing_weights_file_is_named(roots: Roots, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=re.escape(str(tmp_path / "nope.pth"))):
        load_backbone("random_r18", roots, weights=tmp_path / "nope.pth")


class _NotATensor:
    pass


def test_pickled_objects_are_refused(roots: Roots, tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _NotATensor()}, path)
    with pytest.raises(ModelError, match="refused for safety"):
        load_backbone("random_r18", roots, weights=path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot be read"):
        load_backbone("random_r18", roots, weights=path)


def test_legacy_densenet_keys_load_to_identical_features(roots: Roots, tmp_path: Path) -> None:
    source = _seeded_torchvision("densenet121")
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in source.state_dict().items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert remap_legacy_densenet_keys(legacy).keys() == source.state_dict().keys()
    path = tmp_path / "legacy_d121.pth"
    torch.save(legacy, path)
    backbone = load_backbone("supervised_d121", roots, weights=path)
    x = _images(n=1)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), _reference_features(source, "classifier", x))
