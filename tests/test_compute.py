"""The device and precision policy (the CUDA branches run where a GPU is present)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medtransfer.compute import (
    autocast,
    device_name,
    grad_scaler,
    is_cuda,
    resolve_device,
    resolve_precision,
)
from medtransfer.errors import ConfigError

CUDA = torch.cuda.is_available()


def test_auto_is_full_precision_on_the_cpu() -> None:
    for training in (False, True):
        assert resolve_precision("auto", "cpu", training=training) == "fp32"
    assert isinstance(autocast("cpu", "fp32"), contextlib.nullcontext)
    with autocast("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler(torch.device("cpu"), "fp32").is_enabled()
    assert not is_cuda("cpu") and is_cuda("cuda:1")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_an_explicit_mixed_precision_autocasts_on_the_cpu_too(precision, dtype) -> None:
    assert resolve_precision(precision, "cpu") == precision
    with autocast("cpu", precision):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


def test_the_loss_scaler_is_on_for_fp16_only() -> None:
    assert grad_scaler("cpu", "fp16").is_enabled()
    assert not grad_scaler("cpu", "bf16").is_enabled()


def test_unknown_precisions_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="--precision 'fp8'"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="not an effective precision"):
        autocast("cpu", "auto")


def test_device_names() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_auto_is_bf16_for_inference_and_fp16_for_training() -> None:
    x = torch.ones(4, 4, device="cuda")
    inference = resolve_precision("auto", "cuda")
    assert inference == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert resolve_precision("auto", "cuda", training=True) == "fp16"
    with autocast("cuda", "fp16"):
        assert (x @ x).dtype == torch.float16
    with autocast("cuda", "fp32"):
        assert (x @ x).dtype == torch.float32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert grad_scaler("cuda", "fp16").is_enabled()


def test_a_cpu_is_named_by_its_processor_or_machine_type() -> None:
    import platform

    assert device_name("cpu") == (platform.processor() or platform.machine()) != ""
