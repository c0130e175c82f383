"""Metrics: the catalog's names, NaN-safe balanced accuracy, AUC from scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from medtransfer.errors import ProtocolError
from medtransfer.protocols.metrics import (
    accuracy,
    binary_auc,
    classification_metrics,
    dataset_metric,
    mean_per_class_accuracy,
    metric_from_scores,
)
from medtransfer.protocols.stats import format_spread, mean_over_seeds, metrics_with_interval


def test_accuracy_and_mean_per_class() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert accuracy(y_true, y_pred) == pytest.approx(75.0)
    expected = (3 / 4 + 1 / 2 + 1) / 3 * 100
    assert mean_per_class_accuracy(y_true, y_pred) == pytest.approx(expected)
    assert mean_per_class_accuracy(y_true, y_pred) == pytest.approx(
        balanced_accuracy_score(y_true, y_pred) * 100
    )
    assert dataset_metric("mean per-class accuracy", y_true, y_pred) == pytest.approx(expected)


def test_class_predicted_but_absent_is_not_nan() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 3, 1, 1])
    assert mean_per_class_accuracy(y_true, y_pred) == pytest.approx(75.0)


def test_auc_uses_scores_not_hard_labels() -> None:
    y_true = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert binary_auc(y_true, scores) == pytest.approx(75.0)
    with pytest.raises(ProtocolError, match="binary"):
        binary_auc(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))


def test_unknown_metric() -> None:
    with pytest.raises(ProtocolError, match="auroc"):
        dataset_metric("auroc", np.array([0]), np.array([0]))


def test_one_bundle_with_one_auc_rule() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9]])
    metrics = classification_metrics(y_true, scores, "mean per-class accuracy")
    assert list(metrics) == ["mean_per_class_accuracy", "accuracy", "balanced_accuracy", "auc"]
    assert metrics["accuracy"] == pytest.approx(60.0)
    assert metrics["balanced_accuracy"] == metrics["mean_per_class_accuracy"]
    assert metrics["auc"] == pytest.approx(binary_auc(y_true, scores[:, 1]))
    # one class present, or three score columns: no AUC
    assert "auc" not in classification_metrics(y_true[2:], scores[2:], "accuracy")
    three = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
    assert "auc" not in classification_metrics(np.array([0, 1]), three, "accuracy")
    with pytest.raises(ProtocolError, match="3 classes"):
        metric_from_scores(np.array([0, 1]), three, "auc")


def test_columns_may_carry_any_labels() -> None:
    names = np.array(["effusion", "normal"])
    y_true = names[[0, 1, 1, 0]]
    scores = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]])
    metrics = classification_metrics(y_true, scores, "accuracy", classes=names)
    assert metrics["accuracy"] == pytest.approx(50.0)
    assert metrics["auc"] == pytest.approx(binary_auc(np.array([0, 1, 1, 0]), scores[:, 1]))
    # test labels that are not the two score columns: no AUC
    odd = classification_metrics(
        np.array(["normal", "other"]), scores[:2], "accuracy", classes=names
    )
    assert "auc" not in odd


def test_interval_and_spread_entries() -> None:
    y_true = np.array([0, 1] * 10)
    scores = np.stack([1 - np.linspace(0, 1, 20), np.linspace(0, 1, 20)], axis=1)
    entries = metrics_with_interval(y_true, scores, "auc", n_resamples=30, seed=0)
    low, high = entries["auc_ci"]
    assert low <= entries["auc"] <= high
    assert "auc_ci" not in metrics_with_interval(y_true, scores, "auc", n_resamples=0, seed=0)
    runs = mean_over_seeds([{"accuracy": 70.0}, {"accuracy": 74.0}], "accuracy")
    assert format_spread(runs, "accuracy", "seeds") == "over 2 seeds: 72.00% ± 2.83 (std)"
