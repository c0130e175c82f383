"""Classification metrics, named as the catalog names them (docs/original-study.md#metrics).

Every function takes ``y_true`` (N,) class labels; accuracies and AUC are in percent.
:func:`classification_metrics` is the one bundle every protocol records for a test set.
"""

from __future__ import annotations

import numpy as np

from medtransfer.errors import ProtocolError

ACCURACY = "accuracy"
MEAN_PER_CLASS_ACCURACY = "mean per-class accuracy"
AUC = "auc"
#: Where an AUC comes from: the positive class's probability (a ranking AUC, the default)
#: or hard argmax labels (the original's ``finetune_auc.py``, docs/original-study.md#defect-e23).
AUC_SOURCES: tuple[str, ...] = ("probabilities", "labels")


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """100 · fraction of ``y_pred`` (N,) equal to ``y_true`` (N,)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ProtocolError("Cannot compute accuracy on an empty set.")
    return float(np.mean(y_true == y_pred) * 100)


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """100 · mean over the classes present in ``y_true`` of their recall (balanced accuracy).

    Unlike the original (``confusion_matrix(...).diagonal() / sum(axis=1)``), a class that is
    predicted but absent from ``y_true`` does not turn the result into NaN
    (docs/original-study.md#defect-d41).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ProtocolError("Cannot compute mean per-class accuracy on an empty set.")
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls) * 100)


def binary_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (in percent) of a binary task from scores of the positive class, (N,).

    ``y_true`` (N,) holds 0 and 1. Scores must be probabilities or logits, not hard
    predictions (the original's ``finetune_auc.py`` passed argmax labels, which gives
    balanced accuracy, docs/original-study.md#defect-d42).
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    if set(np.unique(y_true)) != {0, 1}:
        raise ProtocolError("AUC needs a binary task with both classes present in y_true.")
    return float(roc_auc_score(y_true, np.asarray(scores, dtype=np.float64)) * 100)


def hard_label_auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """What the original's ``finetune_auc.py`` reported as AUC, in percent:
    ``roc_auc_score`` of 0/1 labels ``y_true`` (N,) against argmax predictions ``y_pred``
    (N,), i.e. (TPR + TNR) / 2, the balanced accuracy of a binary task, not a ranking AUC
    (docs/original-study.md#defect-e23). The original printed the fraction with a "%"."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    if set(np.unique(y_true)) != {0, 1}:
        raise ProtocolError("AUC needs a binary task with both classes present in y_true.")
    return float(roc_auc_score(y_true, np.asarray(y_pred, dtype=np.float64)) * 100)


METRICS = {ACCURACY: accuracy, MEAN_PER_CLASS_ACCURACY: mean_per_class_accuracy}


def metric_key(name: str, auc_from: str = "probabilities") -> str:
    """The record key of a metric: ``mean per-class accuracy`` -> ``mean_per_class_accuracy``;
    ``auc`` from hard labels -> ``auc_from_labels`` (the ``auc`` key always holds the
    ranking AUC)."""
    if name == AUC and auc_from == "labels":
        return "auc_from_labels"
    return name.replace(" ", "_").replace("-", "_")


def dataset_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The metric a dataset's catalog entry names (``accuracy`` or ``mean per-class accuracy``)."""
    try:
        return METRICS[name](y_true, y_pred)
    except KeyError:
        raise ProtocolError(f"Unknown metric {name!r}; known: {', '.join(METRICS)}.") from None


def _columns(scores: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """The labels of the score columns: ``classes`` (K,), or 0..K-1 when not given."""
    return np.arange(scores.shape[1]) if classes is None else np.asarray(classes)


def auc_defined(y_true: np.ndarray, classes: np.ndarray) -> bool:
    """The one rule for when a test set has an AUC: the scores have exactly two columns,
    labelled ``classes`` (2,), and ``y_true`` (N,) holds both of these labels and no other."""
    return len(classes) == 2 and set(np.unique(y_true).tolist()) == set(classes.tolist())


def metric_from_scores(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: str,
    *,
    classes: np.ndarray | None = None,
    auc_from: str = "probabilities",
) -> float:
    """``metric`` (percent) of class scores ``scores`` (N, K) against ``y_true`` (N,).

    ``classes`` (K,) labels the score columns (default 0..K-1). ``auc`` needs K == 2 and ranks
    by the score of the positive class ``classes[1]`` (``auc_from="labels"``: by the argmax
    label instead, :func:`hard_label_auc`); the accuracies use ``argmax``.
    """
    scores = np.asarray(scores)
    columns = _columns(scores, classes)
    if metric == AUC:
        if len(columns) != 2:
            raise ProtocolError(f"AUC needs a binary task; this one has {len(columns)} classes.")
        if auc_from not in AUC_SOURCES:
            raise ProtocolError(f"auc_from must be one of {AUC_SOURCES}, not {auc_from!r}.")
        positive = (np.asarray(y_true) == columns[1]).astype(np.int64)
        if auc_from == "labels":
            return hard_label_auc(positive, (scores.argmax(axis=1) == 1).astype(np.int64))
        return binary_auc(positive, scores[:, 1])
    return dataset_metric(metric, y_true, columns[scores.argmax(axis=1)])


def classification_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: str,
    *,
    classes: np.ndarray | None = None,
    auc_from: str = "probabilities",
) -> dict[str, float]:
    """The test metrics every protocol records, in percent, from ``scores`` (N, K).

    Keys: ``metric_key(metric, auc_from)``, ``accuracy``, ``balanced_accuracy``
    (predictions are the argmax of the scores) and ``auc`` from the positive-class score
    where :func:`auc_defined` holds. ``classes`` (K,) labels the score columns (default
    0..K-1).
    """
    scores = np.asarray(scores)
    columns = _columns(scores, classes)
    predictions = columns[scores.argmax(axis=1)]
    out = {
        metric_key(metric, auc_from): metric_from_scores(
            y_true, scores, metric, classes=columns, auc_from=auc_from
        ),
        ACCURACY: accuracy(y_true, predictions),
        "balanced_accuracy": mean_per_class_accuracy(y_true, predictions),
    }
    if auc_defined(y_true, columns):
        out[AUC] = metric_from_scores(y_true, scores, AUC, classes=columns)
    return out
