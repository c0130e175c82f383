"""The kNN job through its function: one line per k, every metric per k in the record."""

from __future__ import annotations

import dataclasses

from medtransfer.config import Roots
from medtransfer.jobs.knn import KnnOptions, run_knn
from medtransfer.jobs.options import DataOptions
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines


def test_one_line_per_k_and_the_shared_metric_bundle(
    job_roots: Roots, resolutions: list[str]
) -> None:
    options = KnnOptions(ks=(1, 3), image_size=SIZE, bootstrap=20)
    result = run_knn(job_roots, DataOptions("shenzhencxr"), MODEL, options, RUN)
    assert resolutions == ["shenzhencxr"]
    assert [line.split(":")[0] for line in result.lines] == ["k=1", "k=3"]
    assert all("95% CI" in line for line in result.lines)
    for k in (1, 3):
        keys = {f"k{k}_{name}" for name in ("accuracy", "accuracy_ci", "balanced_accuracy", "auc")}
        assert keys <= set(result.metrics)
    assert result.record["bank_rows"] + result.record["test_rows"] == 24
    assert log_lines(result.record_path)[-2:] == result.lines


def test_no_validation_split_leaves_train_alone_in_the_bank(job_roots: Roots) -> None:
    data = DataOptions("shenzhencxr", val_fraction=0.0)
    result = run_knn(job_roots, data, MODEL, KnnOptions(ks=(2,), image_size=SIZE), RUN)
    assert result.record["bank_rows"] + result.record["test_rows"] == 24
    assert result.extracted is False  # the split policy does not change the features


def test_a_fp32_run_after_a_bf16_run_extracts_again(job_roots: Roots) -> None:
    data, options = DataOptions("montgomerycxr"), KnnOptions(ks=(2,), image_size=SIZE)
    bf16 = run_knn(job_roots, data, MODEL, options, dataclasses.replace(RUN, precision="bf16"))
    fp32 = run_knn(job_roots, data, MODEL, options, RUN)  # auto: fp32 on the CPU
    assert bf16.extracted and fp32.extracted
    assert bf16.record["params"]["precision"] == "bf16"
    assert fp32.record["params"]["precision"] == "fp32"
    assert bf16.record["feature_key"] != fp32.record["feature_key"]
    again = run_knn(job_roots, data, MODEL, options, RUN)
    assert again.extracted is False
