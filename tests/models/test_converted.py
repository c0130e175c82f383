"""Converted models: download once, convert once, validate before caching, manual files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from medtransfer.cli import main
from medtransfer.errors import ModelError
from medtransfer.models import converted
from medtransfer.models.catalog import get_model_spec
from medtransfer.models.loader import load_backbone
from tests.support.http_server import serve_directory


def _upstream(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A MoCo-style file: the query encoder under a prefix, plus a key encoder and a queue."""
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None).eval()
    state = {f"module.encoder_q.{k}": v for k, v in model.state_dict().items()}
    state.update({f"module.encoder_k.{k}": v.clone() for k, v in model.state_dict().items()})
    state["module.queue"] = torch.randn(128, 16)
    folder = tmp_path / "served"
    folder.mkdir()
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state}, folder / "r8w.pth.tar")
    return folder / "r8w.pth.tar", model


def _fake_converter(calls: list[Path]):
    def convert(path: Path, arch: str) -> dict[str, torch.Tensor]:
        calls.append(path)
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        prefix = "module.encoder_q."
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    return convert


def test_download_convert_once_and_reuse(
    roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, source = _upstream(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(converted, "get_converter", lambda _name: _fake_converter(calls))
    with serve_directory(path.parent) as server:
        spec = dataclasses.replace(
            get_model_spec("moco-cxr_r18"), url=server.url(path.name), filename=path.name
        )
        first = load_backbone(spec, roots, progress=False)
        second = load_backbone(spec, roots, progress=False)
        assert len(server.requests_for(path.name)) == 1
    assert len(calls) == 1  # converted once
    expected_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.weights_sha256 == second.weights_sha256 == expected_sha
    source.fc = torch.nn.Identity()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        x = (images - 0.5020) / 0.085585  # MoCo-CXR's own statistics by default
        torch.testing.assert_close(first(images), source(x))
    study = load_backbone(spec, roots, progress=False, norm="study")
    assert study.normalization == "imagenet"


def test_bad_conversion_is_not_cached(roots, tmp_path: Path, monkeypatch) -> None:
    path, _ = _upstream(tmp_path)

    def dropping(p: Path, arch: str) -> dict[str, torch.Tensor]:
        state = _fake_converter([])(p, arch)
        del state["layer1.0.conv1.weight"]
        return state

    monkeypatch.setattr(converted, "get_converter", lambda _name: dropping)
    spec = get_model_spec("moco-cxr_r18")
    with pytest.raises(ModelError, match=r"layer1\.0\.conv1\.weight"):
        converted.convert_file(spec, roots, path)
    assert not converted.converted_path(roots, spec).exists()


def test_manual_model_says_how_and_convert_command_fills_the_cache(
    roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with pytest.raises(ModelError, match=r"Google login.*ResNet50_1x\.zip"):
        load_backbone("simclr-v1", roots, progress=False)
    path, _ = _upstream(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(converted, "get_converter", lambda _name: _fake_converter(calls))
    spec = dataclasses.replace(get_model_spec("moco-cxr_r18"), url="http://127.0.0.1:9/none")
    monkeypatch.setattr("medtransfer.models.catalog.get_model_spec", lambda _n: spec)
    assert main(["models", "convert", "moco-cxr_r18", "--from", str(path)]) == 0
    assert "converted" in capsys.readouterr().out
    backbone = load_backbone(spec, roots, progress=False)  # no network: the cache is used
    assert backbone.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(calls) == 1


def test_models_list_and_info(capsys) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("simclr-v1", "moco-v2", "swav", "byol", "pirl", "mimic-chexpert_lr_0.01"):
        assert name in out
    assert "by hand" in out and "not cached" in out
    assert main(["models", "info", "mimic-cxr_d121_lr_1e-4"]) == 0
    info = capsys.readouterr().out
    assert "moco-cxr_d121" in info and "densenet121" in info and "cxr" in info
    assert "features.denseblock4" in info  # the named layers reconstruct --layer takes
