"""Stand-ins for the torchvision files the LPIPS trunks load, in torchvision's layout.

Seeded random weights with torchvision's key names and shapes. SqueezeNet 1.1's stand-in
is the whole state dict (classifier included, 1.2M parameters); AlexNet's and VGG16's hold
every ``features.*`` tensor, which is all LPIPS reads: their classifiers (95% of the bytes,
244 MB and 528 MB as float32) are left out to keep the tests fast, and the loader ignores
classifier keys either way.
"""

from __future__ import annotations

import functools
import types
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.fsutil import sha256_file
from medtransfer.models import lpips_trunks
from medtransfer.models.lpips_trunks import LPIPS_TRUNKS, TrunkFile

SEEDS = {"alex": 1, "vgg": 2, "squeeze": 3}


@functools.cache
def standin_model(net: str) -> nn.Module:
    """The seeded torchvision model (VGG16: its ``features`` only) behind a stand-in."""
    torch.manual_seed(SEEDS[net])
    if net == "vgg":
        from torchvision.models.vgg import cfgs, make_layers

        return _Features(make_layers(cfgs["D"]))
    return getattr(torchvision.models, LPIPS_TRUNKS[net].arch)().eval()


class _Features(nn.Module):
    """A module whose only part is ``features`` (what LPIPS takes from torchvision's VGG)."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features


def standin_state(net: str) -> dict[str, Tensor]:
    """The stand-in file's tensors (see the module docstring)."""
    state = standin_model(net).state_dict()
    if net == "squeeze":
        return state
    return {k: v for k, v in state.items() if k.startswith("features.")}


def write_standins(folder: Path) -> dict[str, Path]:
    """Write each net's stand-in under its torchvision file name in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for net, trunk in LPIPS_TRUNKS.items():
        files[net] = folder / trunk.filename
        torch.save(standin_state(net), files[net])
    return files


def serve_from(monkeypatch: pytest.MonkeyPatch, base_url: str, files: dict[str, Path]) -> None:
    """Point the trunk table at ``base_url`` with the stand-ins' checksums."""
    table = {
        net: TrunkFile(net, trunk.arch, f"{base_url}/{trunk.filename}", sha256_file(files[net])[:8])
        for net, trunk in LPIPS_TRUNKS.items()
    }
    monkeypatch.setattr(lpips_trunks, "LPIPS_TRUNKS", table)


def reference_lpips(net: str) -> nn.Module:
    """``lpips.LPIPS(net=net)`` as a user calls it, its trunk from torchvision's builder,
    which is made to return the stand-in model (lpips slices its ``features`` itself)."""
    import lpips
    from lpips import pretrained_networks

    model = standin_model(net)
    arch = LPIPS_TRUNKS[net].arch
    with pytest.MonkeyPatch.context() as patch:
        fake = types.SimpleNamespace(features=model.features)
        patch.setattr(pretrained_networks.tv, arch, lambda *args, **kwargs: fake)
        return lpips.LPIPS(net=net, verbose=False)
