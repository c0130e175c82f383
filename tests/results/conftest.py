"""The reading side's tests share one small synthetic sweep, built once per session:
few-shot, linear and kNN for three tiny models on a synthetic Shenzhen tree, run through
``medtransfer compare`` (what a user would type); and a helper that writes hand-made
records of any protocol's shape."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.results.records import Record, write_record

SWEEP_MODELS = ("random_r18", "random_r50", "efficientnet-lite0")


@dataclass(frozen=True)
class Sweep:
    """A finished sweep: its roots, the flags that point the CLI at them, and what
    ``compare`` printed."""

    roots: Roots
    flags: list[str]
    compare_output: str

    def cli(self, *args: str) -> tuple[int, str]:
        """Run the CLI on the sweep's roots; (exit status, stdout)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main([*self.flags, *args])
        return status, out.getvalue()


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    base = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TORCH_HOME", str(base / "torch"))
        synth = ["datasets", "synth", "-d", "shenzhencxr", "--out", str(base / "data")]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*synth, "--per-class", "14", "--size", "40"]) == 0
        roots = resolve_roots(base / "data", base / "cache", base / "results")
        flags = [
            "--data-root",
            str(roots.data),
            "--cache-dir",
            str(roots.cache),
            "--results-dir",
            str(roots.results),
        ]
        models = [flag for model in SWEEP_MODELS for flag in ("-m", model)]
        run = Sweep(roots, flags, "")
        status, output = run.cli(
            "compare",
            "-d",
            "shenzhencxr",
            *models,
            "--n-support",
            "3",
            "--n-query",
            "4",
            "--iter-num",
            "60",
            "-i",
            "32",
            "--resamples",
            "300",
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--no-progress",
        )
        assert status == 0
    return Sweep(roots, flags, output)


def hand_record(
    root: Path,
    *,
    protocol: str,
    model: str,
    dataset: str = "shenzhencxr",
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any],
    seed: int = 0,
    created: str = "2026-01-01T00:00:00Z",
    extra: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    manifest_hash: str = "m" * 64,
    weights_sha256: str = "w" * 64,
) -> Path:
    """Write a record of any protocol's shape (the records writer's own format)."""
    record = Record(
        protocol=protocol,
        model=model,
        dataset=dataset,
        params={"preset": "none", "split_policy": "patient", **(params or {})},
        seed=seed,
        metrics=metrics,
        weights_sha256=weights_sha256,
        manifest_hash=manifest_hash,
        timings={},
        environment={"medtransfer": "0.1.0", "git_commit": None, "device": "cpu"},
        extra=dict(extra or {}),
        created=created,
    )
    return write_record(root, record, ["hand-made"], arrays)
