"""Classification metrics, named as the catalog names them (spec/datasets-and-models.md §4.3).

Every function takes ``y_true`` (N,) int class indices; accuracies are in percent.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from medtransfer.data.spec import ACCURACY, MEAN_PER_CLASS_ACCURACY
from medtransfer.errors import ProtocolError


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """100 · fraction of ``y_pred`` (N,) equal to ``y_true`` (N,)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ProtocolError("Cannot compute accuracy on an empty set.")
    return float(np.mean(y_true == y_pred) * 100)


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """100 · mean over the classes present in ``y_true`` of their recall (balanced accuracy).

    Unlike the original (``confusion_matrix(...).diagonal() / sum(axis=1)``), a class that is
    predicted but absent from ``y_true`` does not turn the result into NaN (spec §6 #41).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ProtocolError("Cannot compute mean per-class accuracy on an empty set.")
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls) * 100)


def binary_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (in percent) of a binary task from scores of the positive class, (N,).

    Scores must be probabilities or logits, not hard predictions (the original's
    ``finetune_auc.py`` passed argmax labels, which gives balanced accuracy, spec §6 #42).
    """
    y_true = np.asarray(y_true)
    if set(np.unique(y_true)) != {0, 1}:
        raise ProtocolError("AUC needs a binary task with both classes present in y_true.")
    return float(roc_auc_score(y_true, np.asarray(scores, dtype=np.float64)) * 100)


METRICS = {ACCURACY: accuracy, MEAN_PER_CLASS_ACCURACY: mean_per_class_accuracy}


def metric_key(name: str) -> str:
    """The record key of a metric: ``mean per-class accuracy`` -> ``mean_per_class_accuracy``."""
    return name.replace(" ", "_").replace("-", "_")


def dataset_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The metric a dataset's catalog entry names (``accuracy`` or ``mean per-class accuracy``)."""
    try:
        return METRICS[name](y_true, y_pred)
    except KeyError:
        raise ProtocolError(f"Unknown metric {name!r}; known: {', '.join(METRICS)}.") from None
