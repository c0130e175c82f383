"""Lightning MoCo converter: facebookresearch/CovidPrognosis checkpoints (DenseNet-121).

The files are built as PyTorch Lightning 1.0.8 writes them for ``MoCoModule``
(``cp_examples/moco_pretrain``), and as an earlier Lightning writes them for the repo's
older ``MoCoTrainer`` (``self.hparams = args`` -> an AttributeDict). Stand-ins for the two
Lightning globals such files name are importable only while saving, never while loading.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.download import fetch
from medtransfer.errors import ModelError
from medtransfer.models.backbone import build_trunk, load_strict, prepare_state_dict
from medtransfer.models.convert.common import safe_torch_load
from medtransfer.models.convert.lightning import (
    ALLOWED_GLOBALS,
    LightningClassStandIn,
    convert_lightning_moco,
)
from tests.support.checkpoints import Payload, randomize_batchnorm, zeros_like_shared
from tests.support.http_server import serve_directory

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(14))
PREFIX = "model.encoder_q."


class ModelCheckpoint:
    """Pickles as Lightning's ``ModelCheckpoint`` class (used as a dict key)."""

    __module__ = "pytorch_lightning.callbacks.model_checkpoint"


class AttributeDict(dict):
    """Pickles as Lightning's ``AttributeDict`` (a dict with attribute access)."""

    __module__ = "pytorch_lightning.utilities.parsing"

    def __getattr__(self, key: str) -> object:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setattr__(self, key: str, value: object) -> None:
        self[key] = value


class Trainer:
    """Pickles as Lightning's ``Trainer``: a Lightning global that is NOT allowed."""

    __module__ = "pytorch_lightning.trainer.trainer"


@contextlib.contextmanager
def _lightning_importable() -> Iterator[None]:
    """Make the stand-in classes picklable under Lightning's module names, for saving only."""
    classes = (ModelCheckpoint, AttributeDict, Trainer)
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "pytorch_lightning",
            "pytorch_lightning.callbacks",
            "pytorch_lightning.utilities",
            "pytorch_lightning.trainer",
        ):
            patch.setitem(sys.modules, name, types.ModuleType(name))
        for cls in classes:
            module = types.ModuleType(cls.__module__)
            setattr(module, cls.__qualname__, cls)
            patch.setitem(sys.modules, cls.__module__, module)
        yield


class _MoCo(nn.Module):
    """covidprognosis/models/moco_model.py MoCo: encoders, queue ``(128, 65536)``."""

    def __init__(self, encoder_q: nn.Module, encoder_k: nn.Module) -> None:
        super().__init__()
        self.encoder_q = encoder_q
        self.encoder_k = encoder_k
        self.register_buffer("queue", nn.functional.normalize(torch.randn(128, 65536), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


class _MoCoModule(nn.Module):
    """cp_examples/moco_pretrain/moco_module.py MoCoModule: the MoCo model as ``self.model``."""

    def __init__(self, moco: nn.Module) -> None:
        super().__init__()
        self.model = moco
        self.loss_fn = nn.CrossEntropyLoss()


def _densenet(seed: int = 8) -> nn.Module:
    """``densenet121(num_classes=128)`` (the MoCo query encoder), seeded, BN stats set."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.densenet121(weights=None, num_classes=128)
        randomize_batchnorm(model)
    return model.eval()


def _pooled(encoder: nn.Module) -> Tensor:
    trunk = copy.deepcopy(encoder)
    trunk.classifier = nn.Identity()
    with torch.no_grad():
        return trunk.eval()(IMAGES)


def _lightning_checkpoint(encoder_q: nn.Module, *, old_hparams: bool) -> dict[object, object]:
    """Lightning's dump_checkpoint for CovidPrognosis' MoCo (lr 0.1, bs 128, fd 128)."""
    encoder_k = _densenet(seed=99)  # the momentum encoder differs from the query encoder
    encoder_k.requires_grad_(False)
    module = _MoCoModule(_MoCo(encoder_q, encoder_k))
    params = list(module.model.parameters())
    zeros = torch.zeros(max(p.numel() for p in params))  # one storage for all the state
    sgd = {
        "state": {
            i: {"momentum_buffer": zeros_like_shared(p, zeros)}
            for i, p in enumerate(params)
            if p.requires_grad
        },
        "param_groups": [
            {
                "lr": 0.0,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": 1e-4,
                "nesterov": False,
                "initial_lr": 0.1,
                "params": list(range(len(params))),
            }
        ],
    }
    cosine = {
        "T_max": 200,
        "eta_min": 0,
        "base_lrs": [0.1],
        "last_epoch": 200,
        "_step_count": 201,
        "verbose": False,
        "_get_lr_called_within_step": False,
        "_last_lr": [0.0],
    }
    checkpoint: dict[object, object] = {
        "epoch": 200,
        "global_step": 200 * 2870,
        "pytorch-lightning_version": "0.9.0" if old_hparams else "1.0.8",
        "callbacks": {
            ModelCheckpoint: {
                "monitor": None,
                "best_model_score": None,
                "best_model_path": "",
                "current_score": None,
                "dirpath": "/checkpoint/moco/checkpoints",
            }
        },
        "optimizer_states": [sgd],
        "lr_schedulers": [cosine],
        "state_dict": module.state_dict(),
    }
    if old_hparams:
        checkpoint["hparams_name"] = "hparams"
        checkpoint["hyper_parameters"] = AttributeDict(
            arch="densenet121",
            feature_dim=128,
            queue_size=65536,
            learning_rate=0.1,
            momentum=0.9,
            mlp=False,
            dataset_name="mimic-chexpert",
            batch_size=128,
            gpus="0,1,2,3,4,5,6,7",
        )
    return checkpoint


def _assert_query_encoder(state: dict[str, Tensor], encoder_q: nn.Module) -> None:
    """``state`` is exactly ``encoder_q``'s weights without the classifier."""
    reference = {k: v for k, v in encoder_q.state_dict().items() if not k.startswith("classifier.")}
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def _save(obj: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lightning_importable():
        torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def encoder_q() -> nn.Module:
    return _densenet()


@pytest.fixture(scope="module")
def expected(encoder_q: nn.Module) -> Tensor:
    """The query encoder's pooled features ``(2, 1024)``."""
    return _pooled(encoder_q)


def test_covidprognosis_file_converts_to_the_query_encoder(
    tmp_path: Path, encoder_q: nn.Module, expected: Tensor
) -> None:
    name = "mimic-chexpert_lr_0.1_bs_128_fd_128_qs_65536.pt"
    source = _save(_lightning_checkpoint(encoder_q, old_hparams=False), tmp_path / name)
    with serve_directory(source.parent) as server:
        local = fetch(server.url(name), tmp_path / "downloads" / name, progress=False)
    state = convert_lightning_moco(local, "densenet121")
    assert "pytorch_lightning" not in sys.modules  # nothing was imported to read it
    trunk = build_trunk("densenet121")
    load_strict(trunk, prepare_state_dict(state, "densenet121"), what=str(local))
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(IMAGES), expected, rtol=0, atol=0)


def test_older_lightning_file_with_attributedict_hparams(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    path = _save(_lightning_checkpoint(encoder_q, old_hparams=True), tmp_path / "ckpt.pt")
    checkpoint = safe_torch_load(path, allowed_globals=ALLOWED_GLOBALS)
    assert list(checkpoint["callbacks"]) == [LightningClassStandIn]  # inert stand-ins
    assert type(checkpoint["hyper_parameters"]) is dict
    assert checkpoint["hyper_parameters"]["queue_size"] == 65536
    _assert_query_encoder(convert_lightning_moco(path, "densenet121"), encoder_q)


def test_legacy_densenet_names_are_fixed_by_prepare_state_dict(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    checkpoint = _lightning_checkpoint(encoder_q, old_hparams=False)
    state = checkpoint["state_dict"]
    assert isinstance(state, dict)
    legacy = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
    checkpoint["state_dict"] = {legacy.sub(r"\1.\2.", k): v for k, v in state.items()}
    assert f"{PREFIX}features.denseblock1.denselayer1.norm.1.weight" in checkpoint["state_dict"]
    path = _save(checkpoint, tmp_path / "legacy.pt")
    state = prepare_state_dict(convert_lightning_moco(path, "densenet121"), "densenet121")
    load_strict(build_trunk("densenet121"), state, what=str(path))
    _assert_query_encoder(state, encoder_q)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("drop", "features.denseblock4.denselayer16.conv2.weight"),
        ("add", "features.denseblock4.denselayer17.conv2.weight"),
    ],
)
def test_missing_or_extra_backbone_key_fails_in_load_strict(
    tmp_path: Path, encoder_q: nn.Module, edit: str, named: str
) -> None:
    checkpoint = _lightning_checkpoint(encoder_q, old_hparams=False)
    state = checkpoint["state_dict"]
    assert isinstance(state, dict)
    if edit == "drop":
        del state[f"{PREFIX}{named}"]
    else:
        state[f"{PREFIX}{named}"] = torch.zeros(32, 128, 3, 3)
    path = _save(checkpoint, tmp_path / "ckpt.pt")
    converted = prepare_state_dict(convert_lightning_moco(path, "densenet121"), "densenet121")
    with pytest.raises(ModelError, match=named.replace(".", r"\.")):
        load_strict(build_trunk("densenet121"), converted, what=str(path))


def test_missing_wrapper_prefix_or_wrong_arch_is_a_clear_error(
    tmp_path: Path, encoder_q: nn.Module
) -> None:
    plain = encoder_q.state_dict()
    bare = _save({f"{PREFIX}{k}": v for k, v in plain.items()}, tmp_path / "bare.pt")
    with pytest.raises(ModelError, match=r"bare\.pt is not a Lightning.*under 'state_dict'"):
        convert_lightning_moco(bare, "densenet121")

    moco_cxr = {"state_dict": {f"module.encoder_q.{k}": v for k, v in plain.items()}}
    path = _save(moco_cxr, tmp_path / "d1w.pth.tar")
    with pytest.raises(ModelError, match=r"d1w\.pth\.tar.*start with 'model\.encoder_q\.'"):
        convert_lightning_moco(path, "densenet121")

    checkpoint = _lightning_checkpoint(encoder_q, old_hparams=True)
    hparams = checkpoint["hyper_parameters"]
    assert isinstance(hparams, AttributeDict)
    hparams.arch = "resnet50"
    path = _save(checkpoint, tmp_path / "r50.pt")
    with pytest.raises(ModelError, match=r"trained with arch 'resnet50'"):
        convert_lightning_moco(path, "densenet121")


@pytest.mark.parametrize("extra", ["os.system", "Trainer"])
def test_globals_off_the_allow_list_are_refused(tmp_path: Path, extra: str) -> None:
    marker = tmp_path / "pwned"
    evil: object = Payload(os.system, f"touch '{marker}'") if extra == "os.system" else Trainer
    checkpoint = {
        "state_dict": {f"{PREFIX}features.conv0.weight": torch.zeros(64, 3, 7, 7)},
        "callbacks": {ModelCheckpoint: {"best_model_path": ""}},
        "hyper_parameters": AttributeDict(arch="densenet121", trainer=evil),
    }
    path = _save(checkpoint, tmp_path / "evil.pt")
    refused = (
        f"{os.system.__module__}.system"
        if extra == "os.system"
        else f"{Trainer.__module__}.Trainer"
    )
    with pytest.raises(ModelError, match=rf"evil\.pt.*global {re.escape(refused)}"):
        convert_lightning_moco(path, "densenet121")
    assert not marker.exists()
