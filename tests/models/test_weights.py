"""Weight sources: each says where its weights stand, downloads them, and yields them."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from medtransfer.cli import main
from medtransfer.config import Roots
from medtransfer.errors import ModelError
from medtransfer.models.catalog import SOURCES, ModelSpec, get_model_spec, list_models
from medtransfer.models.converted import converted_path, upstream_path
from medtransfer.models.external import build_external
from medtransfer.models.weights import (
    WEIGHT_SOURCES,
    ConvertedFile,
    ExternalFile,
    LocalFile,
    PackagedFile,
    RandomInit,
    TorchvisionFile,
    weight_source,
)
from tests.support.http_server import serve_directory


def _resnet18_file(folder: Path, stem: str = "resnet18") -> tuple[Path, str, torch.nn.Module]:
    """A seeded resnet18 state dict saved as ``<stem>-<sha256[:8]>.pth``."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None).eval()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(model.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = tmp.rename(folder / f"{stem}-{digest[:8]}.pth")
    return path, digest, model


def _served(spec_name: str, url: str, path: Path, digest: str) -> ModelSpec:
    return dataclasses.replace(
        get_model_spec(spec_name), url=url, filename=path.name, sha256_prefix=digest[:8]
    )


def test_every_catalog_source_has_a_class(roots: Roots) -> None:
    assert set(WEIGHT_SOURCES) == {*SOURCES, "external"}
    kinds = {
        "random": RandomInit,
        "torchvision": TorchvisionFile,
        "package": PackagedFile,
        "converted": ConvertedFile,
    }
    for spec in list_models():
        assert type(weight_source(spec, roots)) is kinds[spec.source]


def test_unknown_source_is_a_clear_error(roots: Roots) -> None:
    spec = dataclasses.replace(get_model_spec("random_r18"), source="ftp")
    with pytest.raises(ModelError, match=r"random_r18.*'ftp'"):
        weight_source(spec, roots)


def test_random_init_has_nothing_to_fetch(roots: Roots) -> None:
    source = weight_source(get_model_spec("random_r50"), roots)
    assert source.status() == "random init" and not source.downloads
    assert source.resolve().state is None and source.resolve().path is None
    with pytest.raises(ModelError, match=r"random_r50: nothing to download \(random\)"):
        source.download()


def test_torchvision_file_downloads_once_and_reads(roots: Roots, tmp_path: Path) -> None:
    path, digest, model = _resnet18_file(tmp_path / "served")
    with serve_directory(path.parent) as server:
        spec = _served("supervised_r18", server.url(path.name), path, digest)
        source = weight_source(spec, roots)
        assert source.status() == "not cached"
        assert source.download(progress=False) == (roots.cache / "weights" / path.name, digest)
        assert source.status() == "cached"
        weights = source.resolve(progress=False)
        assert len(server.requests_for(path.name)) == 1
    assert weights.sha256 == digest and weights.path == roots.cache / "weights" / path.name
    assert str(weights.path) in weights.what and "supervised_r18" in weights.what
    assert weights.state is not None and weights.state.keys() == model.state_dict().keys()


def test_torchvision_file_counts_a_verified_torch_hub_copy(
    roots: Roots, isolated_environment: Path
) -> None:
    hub = isolated_environment / "torch" / "hub" / "checkpoints"
    path, digest, _ = _resnet18_file(hub)
    spec = _served("supervised_r18", "http://127.0.0.1:9/none", path, digest)
    assert weight_source(spec, roots).status() == "cached"
    wrong = dataclasses.replace(spec, sha256_prefix="00000000")
    assert weight_source(wrong, roots).status() == "not cached"


def test_packaged_file_is_verified_and_renamed_onto_timm(roots: Roots) -> None:
    source = weight_source(get_model_spec("efficientnet-lite0"), roots)
    assert source.status() == "in package" and not source.downloads
    weights = source.resolve()
    assert weights.sha256.startswith("57934424") and weights.state is not None
    assert "conv_stem.weight" in weights.state and "classifier.weight" in weights.state
    other = dataclasses.replace(get_model_spec("efficientnet-lite0"), arch="resnet18")
    with pytest.raises(ModelError, match="resnet18"):
        weight_source(other, roots).resolve()


def test_converted_file_status_follows_the_cache(roots: Roots, tmp_path: Path) -> None:
    spec = get_model_spec("moco-cxr_r18")
    source = weight_source(spec, roots)
    assert source.status() == "not cached" and source.downloads
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None)
    state = {f"module.encoder_q.{k}": v for k, v in model.state_dict().items()}
    upstream = upstream_path(roots, spec)
    upstream.parent.mkdir(parents=True)
    torch.save({"arch": "resnet18", "state_dict": state}, upstream)
    assert source.status() == "downloaded"
    weights = source.resolve(progress=False)  # converts the file already there, no network
    assert source.status() == "cached"
    assert weights.path == converted_path(roots, spec)
    assert weights.sha256 == hashlib.sha256(upstream.read_bytes()).hexdigest()
    assert "converted by moco" in weights.what
    assert weight_source(get_model_spec("simclr-v1"), roots).status() == "by hand"


def test_external_file_fetches_into_the_family_folder(roots: Roots, tmp_path: Path) -> None:
    path, digest, _ = _resnet18_file(tmp_path / "served")
    spec = dataclasses.replace(
        build_external("torchvision:resnet18").spec, filename=path.name, sha256_prefix=digest[:8]
    )
    with serve_directory(path.parent) as server:
        source = weight_source(dataclasses.replace(spec, url=server.url(path.name)), roots)
        assert isinstance(source, ExternalFile) and source.status() == "not cached"
        weights = source.resolve(progress=False)
    assert weights.path == roots.cache / "weights" / "torchvision" / path.name
    assert source.status() == "cached" and weights.sha256 == digest
    no_url = weight_source(dataclasses.replace(spec, url=None), roots)
    with pytest.raises(ModelError, match="--weights"):
        no_url.download()


def test_local_file_reads_torch_and_safetensors(roots: Roots, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path, digest, model = _resnet18_file(tmp_path)
    spec = get_model_spec("random_r18")
    source = weight_source(spec, roots, path)
    assert isinstance(source, LocalFile) and source.status() == "your file"
    assert not source.downloads
    weights = source.resolve()
    assert weights.sha256 == digest and weights.path == path
    assert weights.what == f"{path} (for random_r18, resnet18)"
    tensors = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tensors)
    safe = LocalFile(spec, roots, tensors).resolve()
    assert safe.state is not None and safe.state.keys() == model.state_dict().keys()
    missing = LocalFile(spec, roots, tmp_path / "nope.safetensors")
    assert missing.status() == "missing"
    with pytest.raises(ModelError, match=r"nope\.safetensors does not exist"):
        missing.resolve()


def test_models_download_goes_through_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "download", "random_r18"]) == 0
    assert "random_r18: nothing to download (random)." in capsys.readouterr().out
    assert main(["models", "download", "efficientnet-lite0"]) == 0
    assert "nothing to download (package)" in capsys.readouterr().out

    path, digest, _ = _resnet18_file(tmp_path / "served")
    with serve_directory(path.parent) as server:
        spec = _served("supervised_r18", server.url(path.name), path, digest)
        monkeypatch.setattr("medtransfer.models.catalog.get_model_spec", lambda _n: spec)
        assert main(["models", "download", "supervised_r18", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "supervised_r18: " in out and path.name in out and digest[:16] in out
