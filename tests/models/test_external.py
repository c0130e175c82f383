"""timm:NAME and torchvision:NAME: weights through our downloader, strict load, family pooling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from medtransfer.errors import ModelError
from medtransfer.models import external
from medtransfer.models.loader import load_backbone
from tests.support.http_server import serve_directory


def test_torchvision_name_downloads_verifies_and_pools(
    roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None).eval()
    served = tmp_path / "served"
    served.mkdir()
    raw = served / "raw.pth"
    torch.save(source.state_dict(), raw)
    name = f"resnet18-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    raw.rename(served / name)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    with serve_directory(served) as server:
        monkeypatch.setattr(
            external, "torchvision_weights", lambda _: (server.url(name), mean, std)
        )
        backbone = load_backbone("torchvision:resnet18", roots, progress=False)
    assert backbone.feature_dim == 512 and backbone.spec.name == "torchvision:resnet18"
    assert backbone.normalization.startswith("standardize:0.485,0.456,0.406/")
    images = torch.rand(2, 3, 64, 64)
    source.fc = torch.nn.Identity()
    expected = source(
        (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    )
    with torch.no_grad():
        torch.testing.assert_close(backbone(images), expected.detach())
    assert (roots.cache / "weights" / "torchvision" / name).is_file()


def test_timm_name_reads_safetensors_and_drops_the_head(
    roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(4)
    source = timm.create_model("test_vit", pretrained=False).eval()
    served = tmp_path / "served"
    served.mkdir()
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, served / "model.safetensors"
    )
    with serve_directory(served) as server:
        monkeypatch.setattr(
            external, "timm_weights_url", lambda _cfg: server.url("model.safetensors")
        )
        backbone = load_backbone("timm:test_vit", roots, progress=False)
    assert backbone.feature_dim == 64
    source.reset_classifier(0)
    images = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        expected = source((images - 0.5) / 0.5)
        torch.testing.assert_close(backbone(images), expected)


def test_unknown_external_names(roots) -> None:
    with pytest.raises(ModelError, match="no-such-net"):
        load_backbone("timm:no-such-net", roots, progress=False)
    with pytest.raises(ModelError, match="no_such_net"):
        load_backbone("torchvision:no_such_net", roots, progress=False)


def test_offline_error_names_the_file(roots, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    with pytest.raises(Exception, match=r"resnet18-f37072fd\.pth"):
        load_backbone("torchvision:resnet18", roots, progress=False)
