"""The linear job through its function: the validation curve is logged, not printed."""

from __future__ import annotations

import pytest

from medtransfer.config import Roots
from medtransfer.errors import ProtocolError
from medtransfer.jobs.linear import LinearOptions, run_linear
from medtransfer.jobs.options import DataOptions
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines


def test_curve_goes_to_the_log_and_the_final_line_is_printed(job_roots: Roots) -> None:
    options = LinearOptions(grid_size=5, image_size=SIZE, bootstrap=20)
    result = run_linear(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    assert len(result.lines) == 1
    assert result.lines[0].startswith("Final accuracy for random_r18 on montgomerycxr: ")
    assert "95% CI" in result.lines[0] and "hyperparameter C" in result.lines[0]
    log = log_lines(result.record_path)
    curve = [line for line in log if line.startswith("Accuracy on val set")]
    assert len(curve) == 5 and log[-1] == result.lines[0]
    assert {"accuracy", "accuracy_ci", "balanced_accuracy", "auc"} <= set(result.metrics)


def test_seeds_resolve_the_dataset_once_and_share_the_features(
    job_roots: Roots, resolutions: list[str]
) -> None:
    options = LinearOptions(grid_size=3, image_size=SIZE, bootstrap=0, seeds=(0, 1))
    result = run_linear(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    assert resolutions == ["montgomerycxr"]
    assert result.extracted is False
    assert result.lines[-1].startswith("over 2 validation draws: ")
    assert [s["val_seed"] for s in result.record["per_seed"]] == [0, 1]
    assert "accuracy_ci" not in result.metrics  # --bootstrap 0: no interval


def test_the_search_needs_a_validation_split(job_roots: Roots) -> None:
    data = DataOptions("montgomerycxr", val_fraction=0.0)
    options = LinearOptions(grid_size=3, image_size=SIZE, bootstrap=0)
    with pytest.raises(ProtocolError, match="validation split"):
        run_linear(job_roots, data, MODEL, options, RUN)
    fixed = run_linear(job_roots, data, MODEL, LinearOptions(C=1.0, image_size=SIZE), RUN)
    assert fixed.record["sizes"]["val"] == 0 and fixed.record["chosen_C"] == 1.0
