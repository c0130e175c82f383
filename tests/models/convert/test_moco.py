"""MoCo converter: the released MoCo v2 file and MoCo-CXR's full training checkpoints.

Files are built in the upstream layouts (facebookresearch/moco ``main_moco.py`` and
stanfordmlgroup/MoCo-CXR's fork), served from 127.0.0.1, downloaded with ``fetch`` and
converted; the trunk's pooled features must equal the source query encoder's.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.download import fetch
from medtransfer.errors import ModelError
from medtransfer.models.backbone import build_trunk, load_strict, prepare_state_dict
from medtransfer.models.convert.moco import convert_moco
from tests.support.checkpoints import (
    DDP,
    Payload,
    randomize_batchnorm,
    save_torch,
    zeros_like_shared,
)
from tests.support.http_server import serve_directory

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
HEAD = {"resnet50": "fc", "resnet18": "fc", "densenet121": "classifier"}


class _MoCo(nn.Module):
    """moco/builder.py's MoCo: encoders and queue ``(dim, K)``; forward is not needed."""

    def __init__(self, encoder_q: nn.Module, encoder_k: nn.Module, dim: int, k: int) -> None:
        super().__init__()
        self.encoder_q = encoder_q
        self.encoder_k = encoder_k
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, k), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def _encoder(arch: str, seed: int) -> nn.Module:
    """A seeded torchvision model with MoCo v2's MLP head (``--mlp``) and non-trivial BN stats."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(weights=None, num_classes=128)
        linear = getattr(model, HEAD[arch])
        width = linear.in_features
        setattr(model, HEAD[arch], nn.Sequential(nn.Linear(width, width), nn.ReLU(), linear))
        randomize_batchnorm(model)
    return model.eval()


def _pooled(model: nn.Module, arch: str) -> Tensor:
    """Pooled features ``(2, D)`` of ``model`` with its head replaced by the identity."""
    trunk = copy.deepcopy(model)
    setattr(trunk, HEAD[arch], nn.Identity())
    with torch.no_grad():
        return trunk.eval()(IMAGES)


def _adam_state(model: nn.Module, lr: float) -> dict[str, object]:
    """``torch.optim.Adam(model.parameters()).state_dict()`` after training (MoCo-CXR)."""
    params = list(model.parameters())
    zeros = torch.zeros(max(p.numel() for p in params))  # one storage for all the state
    state = {
        i: {
            "step": 20_000,
            "exp_avg": zeros_like_shared(p, zeros),
            "exp_avg_sq": zeros_like_shared(p, zeros),
        }
        for i, p in enumerate(params)
        if p.requires_grad
    }
    group = {
        "lr": lr,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1e-4,
        "amsgrad": False,
        "params": list(range(len(params))),
    }
    return {"state": state, "param_groups": [group]}


def _released_moco_v2(encoder_q: nn.Module) -> dict[str, object]:
    """moco_v2_800ep_pretrain.pth.tar: cleaned up, query encoder only (moco#27)."""
    state = OrderedDict((f"module.encoder_q.{k}", v) for k, v in encoder_q.state_dict().items())
    return {"epoch": 800, "arch": "resnet50", "state_dict": state}


def _moco_cxr_checkpoint(encoder_q: nn.Module, arch: str) -> dict[str, object]:
    """MoCo-CXR main_moco.py checkpoint: DDP(MoCo) state, Adam state, K=24576 queue."""
    encoder_k = _encoder(arch, seed=99)  # the momentum encoder differs from the query encoder
    encoder_k.requires_grad_(False)
    model = DDP(_MoCo(encoder_q, encoder_k, dim=128, k=24576))
    return {
        "epoch": 20,
        "arch": arch,
        "state_dict": model.state_dict(),
        "optimizer": _adam_state(model, lr=1e-4),
    }


def _download_and_convert(source: Path, arch: str, tmp_path: Path) -> nn.Module:
    """Serve ``source`` locally, fetch it, convert it and load it strictly into a trunk."""
    with serve_directory(source.parent) as server:
        local = fetch(server.url(source.name), tmp_path / "downloads" / source.name, progress=False)
    trunk = build_trunk(arch)
    load_strict(trunk, prepare_state_dict(convert_moco(local, arch), arch), what=str(local))
    return trunk.eval()


@pytest.fixture(scope="module")
def resnet18_q() -> nn.Module:
    return _encoder("resnet18", seed=3)


@pytest.fixture(scope="module")
def resnet50_q() -> tuple[nn.Module, Tensor]:
    """The MoCo v2 query encoder and its pooled features."""
    encoder = _encoder("resnet50", seed=2)
    return encoder, _pooled(encoder, "resnet50")


def test_released_moco_v2_converts_to_the_query_encoder(
    tmp_path: Path, resnet50_q: tuple[nn.Module, Tensor]
) -> None:
    encoder_q, expected = resnet50_q
    # A March 2020 file: torch < 1.6 wrote the legacy (non-zip) container; MoCo-CXR's is zip.
    source = save_torch(
        _released_moco_v2(encoder_q), tmp_path / "served" / "moco_v2.pth.tar", legacy=True
    )
    trunk = _download_and_convert(source, "resnet50", tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(trunk(IMAGES), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_moco_cxr_training_checkpoint_keeps_only_the_query_encoder(
    tmp_path: Path, resnet18_q: nn.Module, arch: str
) -> None:
    encoder_q = resnet18_q if arch == "resnet18" else _encoder(arch, seed=4)
    source = save_torch(
        _moco_cxr_checkpoint(encoder_q, arch), tmp_path / "served" / "w-00001.pth.tar"
    )
    trunk = _download_and_convert(source, arch, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(trunk(IMAGES), _pooled(encoder_q, arch), rtol=0, atol=0)


def test_converter_output_has_no_head_queue_or_momentum_encoder(
    tmp_path: Path, resnet18_q: nn.Module
) -> None:
    path = save_torch(_moco_cxr_checkpoint(resnet18_q, "resnet18"), tmp_path / "r8w.pth.tar")
    state = convert_moco(path, "resnet18")
    assert set(state) == {k for k in resnet18_q.state_dict() if not k.startswith("fc.")}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("drop", "layer1.0.conv1.weight"),
        ("add", "layer1.0.conv9.weight"),
    ],
)
def test_missing_or_extra_backbone_key_fails_in_load_strict(
    tmp_path: Path, resnet18_q: nn.Module, edit: str, named: str
) -> None:
    checkpoint = _moco_cxr_checkpoint(resnet18_q, "resnet18")
    state = checkpoint["state_dict"]
    assert isinstance(state, dict)
    if edit == "drop":
        del state[f"module.encoder_q.{named}"]
    else:
        state[f"module.encoder_q.{named}"] = torch.zeros(64, 64, 3, 3)
    path = save_torch(checkpoint, tmp_path / "r8w.pth.tar")
    with pytest.raises(ModelError, match=named.replace(".", r"\.")):
        load_strict(build_trunk("resnet18"), convert_moco(path, "resnet18"), what=str(path))


def test_missing_wrapper_prefix_or_wrong_arch_is_a_clear_error(
    tmp_path: Path, resnet18_q: nn.Module
) -> None:
    plain = resnet18_q.state_dict()
    bare = save_torch({f"module.encoder_q.{k}": v for k, v in plain.items()}, tmp_path / "bare.pth")
    with pytest.raises(ModelError, match=r"bare\.pth.*under 'state_dict'.*module\.encoder_q"):
        convert_moco(bare, "resnet18")

    single_gpu = {"arch": "resnet18", "state_dict": {f"encoder_q.{k}": v for k, v in plain.items()}}
    path = save_torch(single_gpu, tmp_path / "single.pth")
    with pytest.raises(ModelError, match=r"single\.pth.*start with 'module\.encoder_q\.'.*conv1"):
        convert_moco(path, "resnet18")

    released = save_torch(_released_moco_v2(resnet18_q), tmp_path / "v2.pth.tar")  # says resnet50
    with pytest.raises(ModelError, match=r"trained with arch 'resnet50'.*resnet18"):
        convert_moco(released, "resnet18")
    with pytest.raises(ModelError, match="vit_b_16"):
        convert_moco(released, "vit_b_16")


def test_truncated_or_missing_file_is_a_clear_error(tmp_path: Path, resnet18_q: nn.Module) -> None:
    path = save_torch(_released_moco_v2(resnet18_q), tmp_path / "cut.pth.tar")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelError, match=r"cut\.pth\.tar.*truncated or corrupt"):
        convert_moco(path, "resnet50")
    with pytest.raises(ModelError, match="does not exist"):
        convert_moco(tmp_path / "absent.pth.tar", "resnet50")


def _payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, f"touch '{marker}'"),
        "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_forbidden_global_is_refused_without_running(
    tmp_path: Path, resnet18_q: nn.Module, kind: str
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_payloads(control)[kind]))  # the payload is live ...
    assert control.exists()

    marker = tmp_path / "pwned"
    checkpoint = _moco_cxr_checkpoint(resnet18_q, "resnet18")
    checkpoint["optimizer"] = _payloads(marker)[kind]
    path = save_torch(checkpoint, tmp_path / "evil.pth.tar")
    with pytest.raises(ModelError, match=r"evil\.pth\.tar.*global ((posix|nt)\.system|exec)"):
        convert_moco(path, "resnet18")
    assert not marker.exists()  # ... but the converter never ran it
