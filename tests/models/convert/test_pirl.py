"""PIRL converter: PyContrast's ``ContrastTrainer.save`` layout.

``{'model': DDP(RGBMultiHeads).state_dict(), 'contrast': RGBMem.state_dict(),
'optimizer': SGD state, 'epoch': 200}``: ``module.encoder.*`` (torchvision ResNet-50 without
``fc``), ``module.head.0.*`` and ``module.head_jig.fc{1,2}.*``, memory bank
``{'memory': (n_images, 128)}`` (1,281,167 images upstream; a few here).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.download import fetch
from medtransfer.errors import ModelError
from medtransfer.models.backbone import build_trunk, load_strict, prepare_state_dict
from medtransfer.models.convert.pirl import convert_pirl
from tests.support.checkpoints import (
    DDP,
    Payload,
    randomize_batchnorm,
    save_torch,
    zeros_like_shared,
)
from tests.support.http_server import serve_directory

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(13))


class _JigsawHead(nn.Module):
    """networks/util.py JigsawHead (linear): fc1 2048→128, fc2 (128·9)→128."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2048, 128)
        self.fc2 = nn.Linear(128 * 9, 128)


class _RGBMultiHeads(nn.Module):
    """networks/build_backbone.py RGBMultiHeads('resnet50', head='linear', feat_dim=128)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(2048, 128))  # then Normalize(2), no parameters
        self.head_jig = _JigsawHead()


class _RGBMem(nn.Module):
    """memory/mem_bank.py RGBMem: the memory bank buffer ``(n_data, feat_dim)``."""

    def __init__(self, n_data: int) -> None:
        super().__init__()
        self.register_buffer("memory", nn.functional.normalize(torch.randn(n_data, 128)))


def _encoder(seed: int = 6) -> nn.Module:
    """PyContrast's ResNet-50: torchvision's layout without ``fc`` (seeded, BN stats set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        del model.fc
        randomize_batchnorm(model)
    return model.eval()


def _pooled(encoder: nn.Module) -> Tensor:
    trunk = copy.deepcopy(encoder)
    trunk.fc = nn.Identity()
    with torch.no_grad():
        return trunk.eval()(IMAGES)


def _pirl_checkpoint(encoder: nn.Module) -> dict[str, object]:
    """What ContrastTrainer.save writes for --method PIRL (memory bank, no model_ema/amp)."""
    model = DDP(_RGBMultiHeads(encoder))
    params = list(model.parameters())
    zeros = torch.zeros(max(p.numel() for p in params))  # one storage for all the state
    optimizer = {
        "state": {
            i: {"momentum_buffer": zeros_like_shared(p, zeros)} for i, p in enumerate(params)
        },
        "param_groups": [
            {
                "lr": 0.0003,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": 1e-4,
                "nesterov": False,
                "params": list(range(len(params))),
            }
        ],
    }
    return {
        "model": model.state_dict(),
        "contrast": _RGBMem(n_data=64).state_dict(),
        "optimizer": optimizer,
        "epoch": 200,
    }


def _save_2020(obj: object, path: Path) -> Path:
    """A 2020 (torch 1.4/1.5) file: the pre-zip format."""
    return save_torch(obj, path, legacy=True)


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    return _encoder()


def test_pirl_file_converts_to_the_encoder(tmp_path: Path, encoder: nn.Module) -> None:
    source = _save_2020(_pirl_checkpoint(encoder), tmp_path / "served" / "PIRL.pth")
    with serve_directory(source.parent) as server:
        local = fetch(server.url(source.name), tmp_path / "downloads" / source.name, progress=False)
    state = convert_pirl(local, "resnet50")
    assert set(state) == set(encoder.state_dict())  # no head, head_jig or memory
    trunk = build_trunk("resnet50")
    load_strict(trunk, prepare_state_dict(state, "resnet50"), what=str(local))
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(IMAGES), _pooled(encoder), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "named"), [("drop", "layer3.5.conv2.weight"), ("add", "layer3.6.conv2.weight")]
)
def test_missing_or_extra_backbone_key_fails_in_load_strict(
    tmp_path: Path, encoder: nn.Module, edit: str, named: str
) -> None:
    checkpoint = _pirl_checkpoint(encoder)
    state = checkpoint["model"]
    assert isinstance(state, dict)
    if edit == "drop":
        del state[f"module.encoder.{named}"]
    else:
        state[f"module.encoder.{named}"] = torch.zeros(256, 256, 3, 3)
    path = _save_2020(checkpoint, tmp_path / "PIRL.pth")
    with pytest.raises(ModelError, match=named.replace(".", r"\.")):
        load_strict(build_trunk("resnet50"), convert_pirl(path, "resnet50"), what=str(path))


def test_missing_wrapper_or_prefix_is_a_clear_error(tmp_path: Path, encoder: nn.Module) -> None:
    checkpoint = _pirl_checkpoint(encoder)
    flat = _save_2020(checkpoint["model"], tmp_path / "flat.pth")
    with pytest.raises(ModelError, match=r"flat\.pth is not a PyContrast.*under 'model'"):
        convert_pirl(flat, "resnet50")

    cmc = {
        "model": {"module.encoder1.conv1.weight": torch.zeros(32, 1, 7, 7)},  # CMC.pth layout
        "epoch": 200,
    }
    path = _save_2020(cmc, tmp_path / "CMC.pth")
    with pytest.raises(ModelError, match=r"CMC\.pth.*start with 'module\.encoder\.'.*encoder1"):
        convert_pirl(path, "resnet50")


def test_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    obj = {
        "model": {"module.encoder.conv1.weight": torch.zeros(64, 3, 7, 7)},
        "opt": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }
    path = _save_2020(obj, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match=r"evil\.pth.*global exec.*allowed for this format: none"):
        convert_pirl(path, "resnet50")
    assert not marker.exists()
