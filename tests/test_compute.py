"""The device and mixed-precision policy (the CUDA branches run where a GPU is present)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medtransfer.compute import autocast, grad_scaler, is_cuda, resolve_device
from medtransfer.errors import ConfigError


def test_cpu_runs_in_full_precision() -> None:
    for training in (False, True):
        assert isinstance(autocast("cpu", training=training), contextlib.nullcontext)
        with autocast("cpu", training=training):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler(torch.device("cpu")).is_enabled()
    assert not is_cuda("cpu") and is_cuda("cuda:1")


def test_device_names() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_in_bfloat16_and_training_in_float16() -> None:
    x = torch.ones(4, 4, device="cuda")
    with autocast("cuda"):
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert (x @ x).dtype == expected
    with autocast("cuda", training=True):
        assert (x @ x).dtype == torch.float16
    with autocast("cuda", training=True, enabled=False):
        assert (x @ x).dtype == torch.float32
    assert grad_scaler("cuda").is_enabled() and not grad_scaler("cuda", enabled=False).is_enabled()
