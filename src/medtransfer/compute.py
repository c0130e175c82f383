"""Where and in which precision tensors are computed: the device, and the precision policy.

A precision is ``fp32``, ``bf16`` or ``fp16`` (mixed precision: autocast to that dtype,
features and losses returned in float32), or ``auto``, which :func:`resolve_precision`
turns into one of them:

* on the CPU, ``auto`` is ``fp32``;
* on CUDA, inference (feature extraction, analyses) is ``bf16`` where the GPU supports it
  and ``fp16`` otherwise; training (fine-tuning, its validation and test passes included)
  is ``fp16``, the original's AMP, with a :func:`grad_scaler` scaling the loss.

``fp32`` on CUDA turns TF32 off for matrix products and convolutions, so ``fp32`` means the
same arithmetic on every device. The effective precision is part of every cache key that
holds computed tensors (feature store, fine-tuning checkpoints) and of every record.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch

from medtransfer.config import PRECISIONS
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


def device_name(device: str | torch.device) -> str:
    """What ``device`` is, for people and benchmark tables: the GPU's name, or the CPU's
    (the processor where the platform says it, else the machine type)."""
    if is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device, *, training: bool = False) -> str:
    """The effective precision (``fp32``, ``bf16`` or ``fp16``) of ``precision`` on
    ``device`` (the policy above).

    Raises:
        ConfigError: an unknown precision, or ``bf16`` on a GPU without bfloat16.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown --precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    cuda = is_cuda(device)
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16 was asked for, but this GPU has no bfloat16; use fp16.")
    if precision != "auto":
        return precision
    if not cuda:
        return "fp32"
    return "fp16" if training or not torch.cuda.is_bf16_supported() else "bf16"


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    """CUDA matrix products and convolutions in true float32 (TF32 off) inside the block."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def autocast(
    device: str | torch.device, precision: str
) -> contextlib.AbstractContextManager[object]:
    """The context that computes in ``precision`` (an effective one, see
    :func:`resolve_precision`) on ``device``: autocast for ``bf16``/``fp16``, strict float32
    for ``fp32`` (a no-op on the CPU)."""
    if precision == "fp32":
        return _strict_fp32() if is_cuda(device) else contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ConfigError(f"{precision!r} is not an effective precision (fp32, bf16, fp16).")
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(device: str | torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler that goes with training in ``precision``: active for ``fp16``."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
