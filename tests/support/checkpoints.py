"""Shared pieces for building upstream-format checkpoints in converter tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn


class DDP(nn.Module):
    """Stands in for DistributedDataParallel: its state dict prefixes keys with 'module.'."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class Payload:
    """Pickles as ``func(arg)``: unpickling it runs the call (e.g. creates a marker file)."""

    def __init__(self, func: object, arg: str) -> None:
        self.func = func
        self.arg = arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (self.func, (self.arg,))


def touch_payload(marker: Path) -> Payload:
    """A payload that would create ``marker`` through ``os.system`` if unpickled."""
    return Payload(os.system, f"touch '{marker}'")


def zeros_like_shared(tensor: Tensor, base: Tensor) -> Tensor:
    """Zeros shaped like ``tensor``, viewing ``base`` (optimizer state, kept small on disk)."""
    return base[: tensor.numel()].view_as(tensor)


def save_torch(obj: object, path: Path, *, legacy: bool = False) -> Path:
    """``torch.save`` into ``path`` (``legacy``: the pre-1.6 non-zip format), parents made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def randomize_batchnorm(
    model: nn.Module,
    *,
    affine: bool = False,
    bias: float = 0.1,
    types: tuple[type[nn.Module], ...] = (nn.BatchNorm2d,),
) -> nn.Module:
    """Give every BatchNorm non-trivial statistics (and, with ``affine``, weights), drawn
    from the global RNG, so a dropped or mis-mapped buffer changes the features."""
    for module in model.modules():
        if isinstance(module, types):
            if affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-bias, bias)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model
