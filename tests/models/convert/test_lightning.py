"""Lightning MoCo converter: facebookresearch/CovidPrognosis checkpoints (DenseNet-121).

Files are built in the upstream layouts (``upstream.py``): as PyTorch Lightning 1.0.8
writes them for ``MoCoModule``, and as an earlier Lightning writes them for the repo's older
``MoCoTrainer`` (hyper-parameters as an AttributeDict). Download, conversion, strict load,
equal features and the refusals every converter shares are in ``test_contract.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from medtransfer.errors import ModelError
from medtransfer.models.archs import build_trunk, prepare_state_dict
from medtransfer.models.backbone import load_strict
from medtransfer.models.convert.common import safe_torch_load
from medtransfer.models.convert.lightning import (
    ALLOWED_GLOBALS,
    LightningClassStandIn,
    convert_lightning_moco,
)
from tests.models.convert.upstream import (
    AttributeDict,
    ModelCheckpoint,
    Trainer,
    lightning_checkpoint,
    lightning_densenet,
    save_lightning,
)

PREFIX = "model.encoder_q."


def _assert_query_encoder(state: dict[str, Tensor], encoder_q: nn.Module) -> None:
    """``state`` is exactly ``encoder_q``'s weights without the classifier."""
    reference = {k: v for k, v in encoder_q.state_dict().items() if not k.startswith("classifier.")}
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.fixture(scope="module")
def encoder_q() -> nn.Module:
    return lightning_densenet()


def test_older_lightning_file_with_attributedict_hparams(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    path = save_lightning(lightning_checkpoint(encoder_q, old_hparams=True), tmp_path / "ckpt.pt")
    checkpoint = safe_torch_load(path, allowed_globals=ALLOWED_GLOBALS)
    assert list(checkpoint["callbacks"]) == [LightningClassStandIn]  # inert stand-ins
    assert type(checkpoint["hyper_parameters"]) is dict
    assert checkpoint["hyper_parameters"]["queue_size"] == 65536
    _assert_query_encoder(convert_lightning_moco(path, "densenet121"), encoder_q)
    assert "pytorch_lightning" not in sys.modules  # nothing was imported to read it


def test_legacy_densenet_names_are_fixed_by_prepare_state_dict(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    checkpoint = lightning_checkpoint(encoder_q, old_hparams=False)
    state = checkpoint["state_dict"]
    assert isinstance(state, dict)
    legacy = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
    checkpoint["state_dict"] = {legacy.sub(r"\1.\2.", k): v for k, v in state.items()}
    assert f"{PREFIX}features.denseblock1.denselayer1.norm.1.weight" in checkpoint["state_dict"]
    path = save_lightning(checkpoint, tmp_path / "legacy.pt")
    state = prepare_state_dict(convert_lightning_moco(path, "densenet121"), "densenet121")
    load_strict(build_trunk("densenet121"), state, what=str(path))
    _assert_query_encoder(state, encoder_q)


def test_missing_wrapper_prefix_or_wrong_arch_is_a_clear_error(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    plain = encoder_q.state_dict()
    bare = save_lightning({f"{PREFIX}{k}": v for k, v in plain.items()}, tmp_path / "bare.pt")
    with pytest.raises(ModelError, match=r"bare\.pt is not a Lightning.*under 'state_dict'"):
        convert_lightning_moco(bare, "densenet121")

    moco_cxr = {"state_dict": {f"module.encoder_q.{k}": v for k, v in plain.items()}}
    path = save_lightning(moco_cxr, tmp_path / "d1w.pth.tar")
    with pytest.raises(ModelError, match=r"d1w\.pth\.tar.*start with 'model\.encoder_q\.'"):
        convert_lightning_moco(path, "densenet121")

    checkpoint = lightning_checkpoint(encoder_q, old_hparams=True)
    hparams = checkpoint["hyper_parameters"]
    assert isinstance(hparams, AttributeDict)
    hparams.arch = "resnet50"
    path = save_lightning(checkpoint, tmp_path / "r50.pt")
    with pytest.raises(ModelError, match=r"trained with arch 'resnet50'"):
        convert_lightning_moco(path, "densenet121")


def test_lightning_globals_off_the_allow_list_are_refused(tmp_path: Path) -> None:
    checkpoint = {
        "state_dict": {f"{PREFIX}features.conv0.weight": torch.zeros(64, 3, 7, 7)},
        "callbacks": {ModelCheckpoint: {"best_model_path": ""}},
        "hyper_parameters": AttributeDict(arch="densenet121", trainer=Trainer),
    }
    path = save_lightning(checkpoint, tmp_path / "evil.pt")
    refused = f"{Trainer.__module__}.Trainer"
    with pytest.raises(ModelError, match=rf"evil\.pt.*global {re.escape(refused)}"):
        convert_lightning_moco(path, "densenet121")
