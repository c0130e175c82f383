"""SwAV converter: main_swav.py's wrapped checkpoint, and its format errors.

Files are built in the upstream layout (``upstream.py``); download, conversion, strict
load, equal features and the refusals every converter shares are in ``test_contract.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medtransfer.errors import ModelError
from medtransfer.models.convert.swav import convert_swav
from tests.models.convert.upstream import swav_released, swav_resnet50, swav_training_checkpoint
from tests.support.checkpoints import save_torch

_HEADS = ("projection_head.", "prototypes.")


@pytest.fixture(scope="module")
def swav_model() -> nn.Module:
    return swav_resnet50()


def test_training_checkpoint_gives_the_same_trunk(tmp_path: Path, swav_model: nn.Module) -> None:
    path = save_torch(swav_training_checkpoint(swav_model), tmp_path / "checkpoint.pth.tar")
    state = convert_swav(path, "resnet50")
    reference = {k: v for k, v in swav_model.state_dict().items() if not k.startswith(_HEADS)}
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_missing_prefix_or_foreign_object_is_a_clear_error(
    tmp_path: Path, swav_model: nn.Module
) -> None:
    stripped = {k.removeprefix("module."): v for k, v in swav_released(swav_model).items()}
    path = save_torch(stripped, tmp_path / "stripped.pth")
    with pytest.raises(ModelError, match=r"stripped\.pth.*start with 'module\.'.*'conv1\.weight'"):
        convert_swav(path, "resnet50")
    listed = save_torch([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ModelError, match=r"list\.pth is not a SwAV checkpoint.*a list"):
        convert_swav(listed, "resnet50")
