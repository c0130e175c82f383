"""Shared test set-up: every test runs offline, with all roots and caches in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point every root and third-party cache at a fresh temp folder; forbid hub downloads."""
    base = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("MEDTRANSFER_DATA", str(base / "data"))
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(base / "cache"))
    monkeypatch.setenv("MEDTRANSFER_RESULTS", str(base / "results"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)
    yield base


@pytest.fixture
def roots(isolated_environment: Path):
    """Resolved roots inside the isolated environment."""
    from medtransfer.config import resolve_roots

    return resolve_roots()


@pytest.fixture(scope="module")
def single_thread():
    """Tiny CPU forwards run single-threaded inside the module (much faster on a busy
    machine, where two threads contend with other processes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
