"""Job tests share one synthetic data root and one cache per module (features extracted
once serve every test of the module), with random_r18 at 32 px on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.jobs.options import ModelOptions, RunOptions

MODEL = ModelOptions("random_r18")
RUN = RunOptions(device="cpu", batch_size=16, progress=False)
SIZE = 32


@pytest.fixture(scope="module")
def job_roots(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    """Roots whose data root holds small Shenzhen and Montgomery trees (12 images a class)."""
    base = tmp_path_factory.mktemp("jobs")
    for name in ("shenzhencxr", "montgomerycxr"):
        args = ["datasets", "synth", "--dataset", name, "--out", str(base / "data")]
        assert main([*args, "--per-class", "12", "--size", "48"]) == 0
    return resolve_roots(base / "data", base / "cache", base / "results")


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dataset names resolved while a test runs (each resolution reads the tree)."""
    from medtransfer.jobs import options

    seen: list[str] = []
    resolve = options.resolve_dataset

    def counting(name: str, data_root: Path, cache_root: Path | None = None):
        seen.append(name)
        return resolve(name, data_root, cache_root)

    monkeypatch.setattr(options, "resolve_dataset", counting)
    return seen


def log_lines(record_path: Path) -> list[str]:
    """The log of a record, without the ``INFO:root:`` prefixes."""
    text = record_path.with_suffix(".log").read_text()
    return [line.removeprefix("INFO:root:") for line in text.splitlines()]
