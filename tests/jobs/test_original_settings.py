"""What ``--preset original`` expands to, and the values it leaves to each job to resolve
from the dataset, the model and the protocol (docs/original-study.md#presets)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.errors import ConfigError
from medtransfer.jobs import original
from medtransfer.jobs.options import DataOptions, ModelOptions
from medtransfer.jobs.registry import get_job
from medtransfer.protocols.metrics import metric_from_scores, metric_key
from tests.jobs.conftest import RUN, SIZE

GIVEN = {"dataset": "bach", "model": "byol"}


def test_each_preset_fills_what_the_published_runs_used() -> None:
    data, model, few, run = get_job("few-shot").resolve(GIVEN, "original")
    assert (few.n_way, few.n_support, few.n_query, few.iter_num) == ("original", 20, 15, 600)
    assert few.pool == "original" and data.split_policy == "original"
    assert data.uncertain == "original" and data.stoic_orientation == "original"
    assert model.norm == "original" and run.use_prepared is False and run.precision == "fp32"
    data, model, linear, run = get_job("linear").resolve(GIVEN, "original")
    assert linear.solver == "sklearn-legacy" and linear.grid_size == 45 and model.no_norm
    assert data.split_policy == "original" and run.use_prepared is False
    data, model, knn, run = get_job("knn").resolve(GIVEN, "original")
    assert knn.ks == (10, 20, 100, 200)  # kNN's own settings: the original had no kNN
    assert model.no_norm and data.uncertain == "original" and run.precision == "fp32"
    data, model, tune, run = get_job("finetune").resolve(GIVEN, "original")
    assert tune.early_stopping and not tune.restore_best and tune.auc_from == "labels"
    assert tune.lr == "original" and model.norm == "original" and run.use_prepared is False


def test_flags_given_on_the_command_line_win_over_the_preset() -> None:
    _, _, few, run = get_job("few-shot").resolve({**GIVEN, "n_support": 5}, "original")
    assert few.n_support == 5 and "n_support" not in run.preset_settings


def test_n_way_original_is_the_published_runs_ways() -> None:
    assert original.few_shot_n_way("shenzhencxr") == 2
    assert original.few_shot_n_way("diabetic_retinopathy") == 5
    with pytest.raises(ConfigError, match="no few-shot on cifar100; give --n-way"):
        original.few_shot_n_way("cifar100")


def test_uncertain_original_is_each_protocols_rule() -> None:
    data = DataOptions("chexpert", uncertain="original")
    resolved = {p: data.for_protocol(p).uncertain for p in original.UNCERTAIN}
    assert resolved == {
        "few-shot": "positive",
        "linear": "negative",
        "knn": "negative",
        "finetune": "negative",
        "finetune-auc": "positive",
        "saliency": "positive",  # the analyses use no label
        "invariance": "positive",
        "reconstruction": "positive",
    }
    assert DataOptions("chexpert").for_protocol("linear").uncertain == "positive"
    with pytest.raises(ConfigError, match="resolve it"):
        _ = data.labels  # `datasets check --uncertain original` has no protocol


@pytest.mark.parametrize(
    ("model", "protocol", "expected"),
    [
        ("simclr-v1", "few-shot", "none"),  # the runner's --no-norm
        ("simclr-v1", "finetune", "imagenet"),  # fine-tuned with ImageNet statistics
        ("moco-cxr_r18", "few-shot", "imagenet"),
        ("moco-cxr_r18", "linear", "none"),
        ("mimic-chexpert_lr_0.1", "linear", "histogram"),  # --no-norm left it on
        ("supervised_r50", "knn", "none"),
        ("random_r50", "few-shot", "imagenet"),
    ],
)
def test_norm_original_is_what_the_runner_fed_the_model(
    model: str, protocol: str, expected: str
) -> None:
    assert ModelOptions(model, norm="original").normalization(protocol) == expected


@pytest.fixture(scope="module")
def eyepacs_roots(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    base = tmp_path_factory.mktemp("eyepacs")
    args = ["datasets", "synth", "-d", "diabetic_retinopathy", "--out", str(base / "data")]
    assert main([*args, "--per-class", "6", "--size", "24"]) == 0
    return resolve_roots(base / "data", base / "cache", base / "results")


def test_pool_original_is_the_head_the_originals_cache_kept(
    eyepacs_roots: Roots, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EyePACS: the original walked trainLabels.csv shuffled with seed 42, then the test
    file, and its cache kept the first 10,001 images (here 7, to see the cut)."""
    monkeypatch.setattr(original, "CACHED_POOL_ROWS", 7)
    opened = DataOptions("diabetic_retinopathy", split_policy="original").open(eyepacs_roots)
    rows, described = original.pool_rows(opened.manifest, "original")
    folder = eyepacs_roots.data / "diabetic_retinopathy"
    walk = pd.read_csv(folder / "trainLabels.csv").sample(frac=1, random_state=42)
    expected = [f"train/{image}.jpeg" for image in walk.iloc[:7, 0]]
    assert sorted(opened.manifest.table["path"].iloc[rows]) == sorted(expected)
    assert "first 7 images" in described
    everything, _ = original.pool_rows(opened.manifest, "all")
    assert len(everything) == len(opened.manifest) > 7
    patient = DataOptions("diabetic_retinopathy").open(eyepacs_roots)
    with pytest.raises(ConfigError, match="--split-policy original"):
        original.pool_rows(patient.manifest, "original")


def test_finetune_preset_reproduces_finetune_auc(job_roots: Roots) -> None:
    """finetune --metric auc under the preset is finetune_auc.py: uncertain positive,
    lr 3e-5, early stopping, the last weights tested, AUC of hard labels (= balanced
    accuracy), ImageNet statistics, the original files."""
    job = get_job("finetune")
    given = {
        "dataset": "shenzhencxr", "model": "random_r18", "metric": "auc", "steps": 2,
        "image_size": SIZE, "device": RUN.device, "progress": False, "batch_size": 8,
        "bootstrap": 0,
    }  # fmt: skip
    result = job.run(job_roots, *job.resolve(given, "original"))
    params, metrics = result.record["params"], result.metrics
    assert params["lr"] == 3e-5 and params["auc_from"] == "labels"
    assert params["split_policy"] == "original" and params["restore_best"] is False
    assert params["early_stopping"] is True and params["normalization"] == "imagenet"
    assert params["pixels"]["reason"] == "--no-prepared (set by the preset)"
    assert metric_key("auc", "labels") in metrics and "auc" in metrics
    assert metrics["auc_from_labels"] == pytest.approx(metrics["balanced_accuracy"])
    assert result.lines[0].startswith("seed 0: test auc from hard labels ")
    assert result.record["preset_settings"]["lr"] == "original"


def test_hard_label_auc_is_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    hard = metric_from_scores(y, scores, "auc", auc_from="labels")
    assert hard == pytest.approx(100 * ((2 / 3) + (1 / 2)) / 2)
    ranked = metric_from_scores(y, scores, "auc")
    assert not math.isclose(hard, ranked)
