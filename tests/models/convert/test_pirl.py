"""PIRL converter: what it keeps of PyContrast's ``ContrastTrainer.save`` file, and its
format errors.

Files are built in the upstream layout (``upstream.py``); download, conversion, strict
load, equal features and the refusals every converter shares are in ``test_contract.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medtransfer.errors import ModelError
from medtransfer.models.convert.pirl import convert_pirl
from tests.models.convert.upstream import pirl_checkpoint, pirl_encoder
from tests.support.checkpoints import save_torch


def _save_2020(obj: object, path: Path) -> Path:
    """A 2020 (torch 1.4/1.5) file: the pre-zip format."""
    return save_torch(obj, path, legacy=True)


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    return pirl_encoder()


def test_converter_keeps_the_encoder_only(tmp_path: Path, encoder: nn.Module) -> None:
    path = _save_2020(pirl_checkpoint(encoder), tmp_path / "PIRL.pth")
    state = convert_pirl(path, "resnet50")
    assert set(state) == set(encoder.state_dict())  # no head, head_jig or memory


def test_missing_wrapper_or_prefix_is_a_clear_error(tmp_path: Path, encoder: nn.Module) -> None:
    checkpoint = pirl_checkpoint(encoder)
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
