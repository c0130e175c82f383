"""Which statistics a network's BatchNorm layers normalise with during an analysis.

The original's saliency and invariance scripts never called ``eval()``
(docs/original-study.md#defect-e24, #defect-e33): every BatchNorm layer normalised with the
statistics of the batch it was given. :func:`batchnorm_statistics` reproduces that on
request without touching the network's weights or running statistics:

``eval``
    the running statistics (what a frozen backbone should use; the default everywhere);
``batch``
    the statistics of the whole batch, over (N, H, W) per channel: train-mode BatchNorm
    with the batch composition the caller chooses (the original's k views in one batch);
``per-sample``
    each sample's own statistics, over (H, W) per channel, with the layer's affine
    parameters: exactly train-mode BatchNorm on a batch of one, computed for every sample
    of a batch at once (the original's 54,290 single-image saliency passes).

Train-mode BatchNorm also updates the running statistics; outputs in train mode never read
them, so leaving them untouched changes no output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from medtransfer.errors import ConfigError

BATCHNORM_MODES: tuple[str, ...] = ("eval", "batch", "per-sample")


def _too_few(x: Tensor, per_channel: int, mode: str) -> ConfigError:
    return ConfigError(
        f"{mode} BatchNorm statistics need more than one value per channel, but a layer gets "
        f"input of shape {tuple(x.shape)} ({per_channel} value(s) per channel): the image is "
        "too small for the network's last layers; use a larger --image-size (or more images "
        "per batch)."
    )


def _batch_statistics(module: _BatchNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        per_channel = x.numel() // max(1, x.shape[1])
        if per_channel <= 1:
            raise _too_few(x, per_channel, "batch")
        return F.batch_norm(
            x, None, None, module.weight, module.bias, training=True, momentum=0.0, eps=module.eps
        )

    return forward


def _sample_statistics(module: _BatchNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        per_channel = x.shape[2:].numel() if x.ndim >= 3 else 1
        if per_channel <= 1:
            raise _too_few(x, per_channel, "per-sample")
        return F.instance_norm(
            x, None, None, module.weight, module.bias, use_input_stats=True, eps=module.eps
        )

    return forward


_FORWARDS = {"batch": _batch_statistics, "per-sample": _sample_statistics}


@contextlib.contextmanager
def batchnorm_statistics(network: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Inside the block, every BatchNorm layer of ``network`` normalises with ``mode``'s
    statistics (module docstring); yields ``network``. Nothing is changed for ``eval``.

    The network is put in eval mode (dropout off); on exit each patched layer gets its own
    ``forward`` back. Weights and running statistics are never written.

    Raises:
        ConfigError: an unknown mode, or a BatchNorm subclass with its own ``forward``
            (e.g. timm's BatchNormAct2d), whose emulation would drop what it adds.
    """
    if mode not in BATCHNORM_MODES:
        raise ConfigError(f"Unknown BatchNorm mode {mode!r}; use one of {BATCHNORM_MODES}.")
    network.eval()
    if mode == "eval":
        yield network
        return
    layers = [m for m in network.modules() if isinstance(m, _BatchNorm)]
    custom = sorted({type(m).__name__ for m in layers if type(m).forward is not _BatchNorm.forward})
    if custom:
        raise ConfigError(
            f"BatchNorm mode {mode!r} supports torch's BatchNorm layers only; this network has "
            f"{', '.join(custom)}. Use the eval mode for it."
        )
    make = _FORWARDS[mode]
    try:
        for layer in layers:
            layer.forward = make(layer)  # type: ignore[method-assign]
        yield network
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
