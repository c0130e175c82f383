"""SwAV converter: the released bare state dict and main_swav.py's wrapped checkpoint.

The file is built like facebookresearch/swav's: the DDP-wrapped ``src/resnet50.py`` model
(torchvision trunk, ``projection_head`` 2048→2048→BN→ReLU→128, ``prototypes`` 3000×128),
served from 127.0.0.1, downloaded with ``fetch`` and converted.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.download import fetch
from medtransfer.errors import ModelError
from medtransfer.models.backbone import build_trunk, load_strict, prepare_state_dict
from medtransfer.models.convert.swav import convert_swav
from tests.support.checkpoints import (
    DDP,
    Payload,
    randomize_batchnorm,
    save_torch,
    zeros_like_shared,
)
from tests.support.http_server import serve_directory

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(12))
_HEADS = ("projection_head.", "prototypes.")


def _swav_resnet50(seed: int = 5) -> nn.Module:
    """swav/src/resnet50.py's model: no ``fc``; projection head and prototypes instead."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        del model.fc
        model.projection_head = nn.Sequential(
            nn.Linear(2048, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True), nn.Linear(2048, 128)
        )
        model.prototypes = nn.Linear(128, 3000, bias=False)
        randomize_batchnorm(model, types=(nn.BatchNorm2d, nn.BatchNorm1d))
    return model.eval()


def _pooled(model: nn.Module) -> Tensor:
    """The trunk's pooled features ``(2, 2048)``."""
    trunk = copy.deepcopy(model)
    trunk.fc = nn.Identity()
    with torch.no_grad():
        return trunk.eval()(IMAGES)


def _released(model: nn.Module) -> dict[str, Tensor]:
    """swav_800ep_pretrain.pth.tar: the bare DDP state dict (hubconf.py loads it as is)."""
    return DDP(model).state_dict()


def _training_checkpoint(model: nn.Module) -> dict[str, object]:
    """main_swav.py's checkpoint.pth.tar: the state dict wrapped with optimizer and amp."""
    params = list(DDP(model).parameters())
    zeros = torch.zeros(max(p.numel() for p in params))  # one storage for all the state
    optimizer = {
        "state": {
            i: {"momentum_buffer": zeros_like_shared(p, zeros)} for i, p in enumerate(params)
        },
        "param_groups": [
            {
                "lr": 4.8,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": 1e-6,
                "nesterov": False,
                "params": list(range(len(params))),
            }
        ],
    }
    return {
        "epoch": 800,
        "state_dict": _released(model),
        "optimizer": optimizer,
        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}},
    }


@pytest.fixture(scope="module")
def swav_model() -> nn.Module:
    return _swav_resnet50()


@pytest.fixture(scope="module")
def expected(swav_model: nn.Module) -> Tensor:
    """The trunk's pooled features ``(2, 2048)``."""
    return _pooled(swav_model)


def test_released_swav_file_converts_to_the_trunk(
    tmp_path: Path, swav_model: nn.Module, expected: Tensor
) -> None:
    source = save_torch(
        _released(swav_model), tmp_path / "served" / "swav_800ep_pretrain.pth.tar", legacy=True
    )
    with serve_directory(source.parent) as server:
        local = fetch(server.url(source.name), tmp_path / "downloads" / source.name, progress=False)
    state = convert_swav(local, "resnet50")
    trunk = build_trunk("resnet50")
    load_strict(trunk, prepare_state_dict(state, "resnet50"), what=str(local))
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(IMAGES), expected, rtol=0, atol=0)


def test_training_checkpoint_gives_the_same_trunk(tmp_path: Path, swav_model: nn.Module) -> None:
    path = save_torch(_training_checkpoint(swav_model), tmp_path / "checkpoint.pth.tar")
    state = convert_swav(path, "resnet50")
    reference = {k: v for k, v in swav_model.state_dict().items() if not k.startswith(_HEADS)}
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.mark.parametrize(
    ("edit", "named"), [("drop", "layer4.2.bn3.running_var"), ("add", "layer4.3.conv1.weight")]
)
def test_missing_or_extra_backbone_key_fails_in_load_strict(
    tmp_path: Path, swav_model: nn.Module, edit: str, named: str
) -> None:
    state = _released(swav_model)
    if edit == "drop":
        del state[f"module.{named}"]
    else:
        state[f"module.{named}"] = torch.zeros(512, 2048, 1, 1)
    path = save_torch(state, tmp_path / "swav.pth.tar")
    with pytest.raises(ModelError, match=named.replace(".", r"\.")):
        load_strict(build_trunk("resnet50"), convert_swav(path, "resnet50"), what=str(path))


def test_missing_prefix_or_foreign_object_is_a_clear_error(
    tmp_path: Path, swav_model: nn.Module
) -> None:
    stripped = {k.removeprefix("module."): v for k, v in _released(swav_model).items()}
    path = save_torch(stripped, tmp_path / "stripped.pth")
    with pytest.raises(ModelError, match=r"stripped\.pth.*start with 'module\.'.*'conv1\.weight'"):
        convert_swav(path, "resnet50")
    listed = save_torch([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ModelError, match=r"list\.pth is not a SwAV checkpoint.*a list"):
        convert_swav(listed, "resnet50")


def test_forbidden_global_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = {"module.conv1.weight": torch.zeros(64, 3, 7, 7)}
    obj = {"state_dict": state, "epoch": Payload(os.system, f"touch '{marker}'")}
    path = save_torch(obj, tmp_path / "evil.pth.tar", legacy=True)
    with pytest.raises(ModelError, match=r"evil\.pth\.tar.*global (posix|nt)\.system"):
        convert_swav(path, "resnet50")
    assert not marker.exists()
