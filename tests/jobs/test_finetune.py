"""The fine-tuning job through its function: options become the recipe, one record."""

from __future__ import annotations

import dataclasses

from medtransfer.config import Roots
from medtransfer.jobs.finetune import FinetuneOptions, run_finetune
from medtransfer.jobs.options import DataOptions
from medtransfer.protocols.finetune_config import FinetuneConfig
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines


def test_auc_run_records_the_recipe_and_prints_one_line_per_seed(
    job_roots: Roots, resolutions: list[str]
) -> None:
    options = FinetuneOptions(steps=3, image_size=SIZE, metric="auc", bootstrap=10)
    run = dataclasses.replace(RUN, batch_size=8)
    result = run_finetune(job_roots, DataOptions("montgomerycxr"), MODEL, options, run)
    assert resolutions == ["montgomerycxr"]
    assert result.extracted is None  # reads images, not the feature store
    assert len(result.lines) == 1 and result.lines[0].startswith("seed 0: test auc ")
    assert "tested the last weights" in result.lines[0]
    params = result.record["params"]
    assert params["metric"] == "auc" and params["auc_from"] == "probabilities"
    assert params["batch_size"] == 8 and params["steps"] == 3 and params["seeds"] == [0]
    recipe = FinetuneConfig()
    assert (params["momentum"], params["nesterov"]) == (recipe.momentum, recipe.nesterov)
    assert (params["lr"], params["wd"]) == (recipe.lr, recipe.wd)
    assert {"auc", "auc_ci", "accuracy", "balanced_accuracy"} <= set(result.metrics)
    assert "total_s" in result.record["timings"]
    log = log_lines(result.record_path)
    assert log == [f"Params {{'lr': {recipe.lr}, 'wd': {recipe.wd}}}", *result.notes, *result.lines]
    assert result.notes == ["pixels: the original files"]
