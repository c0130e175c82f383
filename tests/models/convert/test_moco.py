"""MoCo converter: what it keeps of a training checkpoint, and its format errors.

Files are built in the upstream layouts (``upstream.py``); download, conversion, strict
load, equal features and the refusals every converter shares are in ``test_contract.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from medtransfer.errors import ModelError
from medtransfer.models.convert.moco import convert_moco
from tests.models.convert.upstream import moco_cxr_checkpoint, moco_encoder, released_moco_v2
from tests.support.checkpoints import save_torch


@pytest.fixture(scope="module")
def resnet18_q() -> nn.Module:
    return moco_encoder("resnet18", seed=3)


def test_converter_output_has_no_head_queue_or_momentum_encoder(
    tmp_path: Path, resnet18_q: nn.Module
) -> None:
    path = save_torch(moco_cxr_checkpoint(resnet18_q, "resnet18"), tmp_path / "r8w.pth.tar")
    state = convert_moco(path, "resnet18")
    assert set(state) == {k for k in resnet18_q.state_dict() if not k.startswith("fc.")}


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

    released = save_torch(released_moco_v2(resnet18_q), tmp_path / "v2.pth.tar")  # says resnet50
    with pytest.raises(ModelError, match=r"trained with arch 'resnet50'.*resnet18"):
        convert_moco(released, "resnet18")
    with pytest.raises(ModelError, match="vit_b_16"):
        convert_moco(released, "vit_b_16")


def test_truncated_or_missing_file_is_a_clear_error(tmp_path: Path, resnet18_q: nn.Module) -> None:
    path = save_torch(released_moco_v2(resnet18_q), tmp_path / "cut.pth.tar")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelError, match=r"cut\.pth\.tar.*truncated or corrupt"):
        convert_moco(path, "resnet50")
    with pytest.raises(ModelError, match="does not exist"):
        convert_moco(tmp_path / "absent.pth.tar", "resnet50")
