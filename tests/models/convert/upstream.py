"""Checkpoints in the layouts their authors publish, for the PyTorch-pickle converters.

* MoCo (facebookresearch/moco ``main_moco.py``): the released, cleaned-up MoCo v2 file and
  MoCo-CXR's full training checkpoints;
* SwAV (facebookresearch/swav): the DDP-wrapped ``src/resnet50.py`` model (torchvision
  trunk, ``projection_head`` 2048→2048→BN→ReLU→128, ``prototypes`` 3000×128), bare or as
  ``main_swav.py`` wraps it;
* PIRL (HobbitLong/PyContrast ``ContrastTrainer.save``): ``{'model', 'contrast',
  'optimizer', 'epoch'}`` with ``module.encoder.*``, ``module.head.0.*``,
  ``module.head_jig.fc{1,2}.*`` and a memory bank;
* Lightning MoCo (facebookresearch/CovidPrognosis, DenseNet-121): what PyTorch Lightning
  1.0.8 writes for ``MoCoModule``, or an earlier Lightning for the older ``MoCoTrainer``
  (``self.hparams = args`` -> an AttributeDict). Stand-ins for the Lightning globals such
  files name are importable only while saving (:func:`save_lightning`), never while loading.

Every source model is seeded and has non-trivial BatchNorm statistics, so a dropped or
mis-mapped tensor changes the pooled features of :data:`IMAGES`.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from medtransfer.models.archs import get_arch
from tests.support.checkpoints import DDP, randomize_batchnorm, zeros_like_shared

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))


def pooled(model: nn.Module, arch: str) -> Tensor:
    """Pooled features ``(2, D)`` of ``model`` on :data:`IMAGES`, its head the identity."""
    trunk = copy.deepcopy(model)
    setattr(trunk, get_arch(arch).classifier_prefix.rstrip("."), nn.Identity())
    with torch.no_grad():
        return trunk.eval()(IMAGES)


def _sgd_state(params: list[nn.Parameter], lr: float, **extra: object) -> dict[str, object]:
    """``torch.optim.SGD(params, momentum=0.9).state_dict()`` after training."""
    zeros = torch.zeros(max(p.numel() for p in params))  # one storage for all the state
    return {
        "state": {
            i: {"momentum_buffer": zeros_like_shared(p, zeros)}
            for i, p in enumerate(params)
            if p.requires_grad
        },
        "param_groups": [
            {
                "lr": lr,
                "momentum": 0.9,
                "dampening": 0,
                "nesterov": False,
                **extra,
                "params": list(range(len(params))),
            }
        ],
    }


# --------------------------------------------------------------------------- MoCo


class MoCo(nn.Module):
    """moco/builder.py's MoCo (and CovidPrognosis' copy): encoders and queue ``(dim, K)``."""

    def __init__(self, encoder_q: nn.Module, encoder_k: nn.Module, dim: int, k: int) -> None:
        super().__init__()
        self.encoder_q = encoder_q
        self.encoder_k = encoder_k
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, k), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def moco_encoder(arch: str, seed: int) -> nn.Module:
    """A seeded torchvision model with MoCo v2's MLP head (``--mlp``) and non-trivial BN stats."""
    head = get_arch(arch).classifier_prefix.rstrip(".")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(weights=None, num_classes=128)
        linear = getattr(model, head)
        width = linear.in_features
        setattr(model, head, nn.Sequential(nn.Linear(width, width), nn.ReLU(), linear))
        randomize_batchnorm(model)
    return model.eval()


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


def released_moco_v2(encoder_q: nn.Module) -> dict[str, object]:
    """moco_v2_800ep_pretrain.pth.tar: cleaned up, query encoder only (moco#27)."""
    state = OrderedDict((f"module.encoder_q.{k}", v) for k, v in encoder_q.state_dict().items())
    return {"epoch": 800, "arch": "resnet50", "state_dict": state}


def moco_cxr_checkpoint(encoder_q: nn.Module, arch: str) -> dict[str, object]:
    """MoCo-CXR main_moco.py checkpoint: DDP(MoCo) state, Adam state, K=24576 queue."""
    encoder_k = moco_encoder(arch, seed=99)  # the momentum encoder differs from the query one
    encoder_k.requires_grad_(False)
    model = DDP(MoCo(encoder_q, encoder_k, dim=128, k=24576))
    return {
        "epoch": 20,
        "arch": arch,
        "state_dict": model.state_dict(),
        "optimizer": _adam_state(model, lr=1e-4),
    }


# --------------------------------------------------------------------------- SwAV


def swav_resnet50(seed: int = 5) -> nn.Module:
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


def swav_released(model: nn.Module) -> dict[str, Tensor]:
    """swav_800ep_pretrain.pth.tar: the bare DDP state dict (hubconf.py loads it as is)."""
    return DDP(model).state_dict()


def swav_training_checkpoint(model: nn.Module) -> dict[str, object]:
    """main_swav.py's checkpoint.pth.tar: the state dict wrapped with optimizer and amp."""
    return {
        "epoch": 800,
        "state_dict": swav_released(model),
        "optimizer": _sgd_state(list(DDP(model).parameters()), lr=4.8, weight_decay=1e-6),
        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}},
    }


# --------------------------------------------------------------------------- PIRL


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


def pirl_encoder(seed: int = 6) -> nn.Module:
    """PyContrast's ResNet-50: torchvision's layout without ``fc`` (seeded, BN stats set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        del model.fc
        randomize_batchnorm(model)
    return model.eval()


def pirl_checkpoint(encoder: nn.Module) -> dict[str, object]:
    """What ContrastTrainer.save writes for --method PIRL (memory bank, no model_ema/amp)."""
    model = DDP(_RGBMultiHeads(encoder))
    return {
        "model": model.state_dict(),
        "contrast": _RGBMem(n_data=64).state_dict(),
        "optimizer": _sgd_state(list(model.parameters()), lr=0.0003, weight_decay=1e-4),
        "epoch": 200,
    }


# --------------------------------------------------------------------------- Lightning MoCo


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


def save_lightning(obj: object, path: Path) -> Path:
    """``torch.save`` a checkpoint that names the Lightning stand-ins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lightning_importable():
        torch.save(obj, path)
    return path


class _MoCoModule(nn.Module):
    """cp_examples/moco_pretrain/moco_module.py MoCoModule: the MoCo model as ``self.model``."""

    def __init__(self, moco: nn.Module) -> None:
        super().__init__()
        self.model = moco
        self.loss_fn = nn.CrossEntropyLoss()


def lightning_densenet(seed: int = 8) -> nn.Module:
    """``densenet121(num_classes=128)`` (the MoCo query encoder), seeded, BN stats set."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.densenet121(weights=None, num_classes=128)
        randomize_batchnorm(model)
    return model.eval()


def lightning_checkpoint(encoder_q: nn.Module, *, old_hparams: bool) -> dict[object, object]:
    """Lightning's dump_checkpoint for CovidPrognosis' MoCo (lr 0.1, bs 128, fd 128)."""
    encoder_k = lightning_densenet(seed=99)  # the momentum encoder differs from the query one
    encoder_k.requires_grad_(False)
    module = _MoCoModule(MoCo(encoder_q, encoder_k, dim=128, k=65536))
    sgd = _sgd_state(list(module.model.parameters()), lr=0.0, weight_decay=1e-4, initial_lr=0.1)
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
