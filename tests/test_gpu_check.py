"""benchmarks/gpu_check.py runs every check on the CPU at toy sizes (the smoke run), and a
check that breaks shows as a FAIL row without hiding the others."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_the_cpu_smoke_run_passes_every_check_and_prints_one_table(
    gpu_check, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main(["--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU smoke run (toy sizes; no speed claim)")
    rows = [line.split("  ")[0] for line in out.splitlines()[3:-1]]
    for check in ("extract random_r18", "throughput random_r18 32px", "finetune step",
                  "finetune", "linear torch solver", "linear.py (small)", "saliency",
                  "invariance"):  # fmt: skip
        assert check in rows
    assert sum(row.startswith("extract ") for row in rows) == 3  # fp32, bf16, fp16
    assert sum(row.startswith("throughput ") for row in rows) == 6  # x channels_last off/on
    assert " FAIL" not in out


def test_a_broken_check_is_a_fail_row_and_the_others_still_run(gpu_check, tmp_path: Path) -> None:
    def check_broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access")

    def check_fine(ctx):
        return [gpu_check.Row("fine", "-", "-", "-", "ok")]

    ctx = gpu_check.Context("cpu", True, tmp_path)
    rows = gpu_check.run_checks(ctx, [check_broken, check_fine])
    assert [(r.check, r.status) for r in rows] == [("broken", "FAIL"), ("fine", "ok")]
    assert "illegal memory access" in rows[0].accuracy
