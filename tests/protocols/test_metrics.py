"""Metrics: the catalog's names, NaN-safe balanced accuracy, AUC from scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from medtransfer.errors import ProtocolError
from medtransfer.protocols.metrics import (
    accuracy,
    binary_auc,
    dataset_metric,
    mean_per_class_accuracy,
)


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
