"""Where and in which precision tensors are computed: the device, and the mixed-precision policy.

Mixed precision is used on CUDA only; on the CPU everything runs in float32:

* inference (feature extraction) runs under bfloat16 autocast where the GPU supports it,
  float16 otherwise; features are returned as float32;
* training (fine-tuning, its validation and test passes included) runs under float16
  autocast, the original's AMP, with a :func:`grad_scaler` scaling the loss.
"""

from __future__ import annotations

import contextlib

import torch

from medtransfer.errors import ConfigError


def resolve_device(name: str = "auto") -> str:
    """Map ``auto|cpu|cuda[:N]`` to a torch device string; ``auto`` takes a GPU when present."""
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} was asked for, but torch sees no CUDA device. Use --device cpu "
                "or --device auto."
            )
        return name
    raise ConfigError(f"Unknown --device {name!r}; use auto, cpu or cuda.")


def is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` is a CUDA device (``cuda``, ``cuda:1``, ...)."""
    return torch.device(device).type == "cuda"


def autocast(
    device: str | torch.device, *, training: bool = False, enabled: bool = True
) -> contextlib.AbstractContextManager[object]:
    """The autocast context of the policy above for ``device`` (a no-op off CUDA or when
    not ``enabled``)."""
    if not enabled or not is_cuda(device):
        return contextlib.nullcontext()
    if training or not torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def grad_scaler(device: str | torch.device, *, enabled: bool = True) -> torch.amp.GradScaler:
    """The loss scaler that goes with training autocast: active on CUDA when ``enabled``."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")
