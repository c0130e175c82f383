"""Paired comparison of records: which of several models is better on one dataset, and
which differences are real.

:func:`compare_group` takes the records of several models under one protocol on one
dataset (one record per model), checks from their sidecars that they scored the same
items (the same episodes; the same test rows of the same manifest), and compares every
pair (:mod:`medtransfer.results.paired`). :func:`rank` orders the models by their main
metric with its interval. The ``compare`` command (:mod:`medtransfer.results.commands`)
runs what is missing first; the report uses the same functions on the records it finds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medtransfer.errors import ProtocolError
from medtransfer.results.collect import RecordFile
from medtransfer.results.paired import Paired, holm_adjust, paired_bootstrap, paired_episodes
from medtransfer.results.sidecar import load_sidecar
from medtransfer.results.table import main_metric, metric_values, number_text, record_metric

#: Protocols whose records can be compared pair by pair, and what they share.
PAIRED_PROTOCOLS = {"few-shot": "episodes", "linear": "test rows", "knn": "test rows"}


@dataclass(frozen=True)
class Ranked:
    """A model's place: its label, main metric name, value and interval (NaN when none),
    and the record."""

    label: str
    metric: str
    value: float
    low: float
    high: float
    record: RecordFile


@dataclass
class GroupComparison:
    """The comparisons of one (protocol, dataset): the ranking, the paired results, and
    the pairs that could not be paired (with why)."""

    protocol: str
    dataset: str
    ranking: list[Ranked]
    pairs: list[Paired] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)


def knn_metric_name(record: RecordFile, k: int) -> str:
    """The record key of the dataset metric at ``k`` neighbours (``k20_accuracy``)."""
    from medtransfer.protocols.metrics import metric_key

    ks = record.params.get("ks") or []
    if k not in ks:
        raise ProtocolError(
            f"{record.path}: kNN was run with k in {ks}, not {k}; pick --k from those."
        )
    return f"k{k}_{metric_key(record.params['metric'])}"


def rank(records: Sequence[RecordFile], *, k: int = 20) -> list[Ranked]:
    """Models ordered by their main metric (kNN: the dataset metric at ``k``), best first."""
    out = []
    for record in records:
        values = {v.name: v for v in metric_values(record.data["metrics"])}
        if record.data["protocol"] == "knn":
            name = knn_metric_name(record, k)
        else:
            name = main_metric(values.values(), record_metric(record.params)) or ""
        if name not in values:
            continue
        v = values[name]
        out.append(Ranked(record.label, name, v.value, v.low, v.high, record))
    return sorted(out, key=lambda r: -r.value)


def _pair(
    protocol: str, first: RecordFile, second: RecordFile, *, k: int, resamples: int, seed: int
) -> Paired | str:
    """The paired comparison of two records, or why they cannot be paired."""
    from medtransfer.protocols.metrics import metric_from_scores

    a, b = first.label, second.label
    arrays_a, arrays_b = load_sidecar(first.path), load_sidecar(second.path)
    missing = [r.path.name for r, arr in ((first, arrays_a), (second, arrays_b)) if arr is None]
    if arrays_a is None or arrays_b is None:
        return (
            f"{a} vs {b}: no per-item sidecar ({', '.join(missing)}); re-run with this "
            "medtransfer version to compare them paired"
        )
    if protocol == "few-shot":
        if "episode_accuracy" not in arrays_a or "episode_accuracy" not in arrays_b:
            return f"{a} vs {b}: a sidecar lacks the per-episode accuracies"
        if not np.array_equal(arrays_a["episodes_sha256"], arrays_b["episodes_sha256"]):
            return f"{a} vs {b}: scored on different episodes (different seeds, shapes or data)"
        return paired_episodes(a, b, arrays_a["episode_accuracy"], arrays_b["episode_accuracy"])
    if first.data.get("manifest_hash") != second.data.get("manifest_hash") or not (
        np.array_equal(arrays_a["test_rows"], arrays_b["test_rows"])
        and np.array_equal(arrays_a["y_true"], arrays_b["y_true"])
    ):
        return f"{a} vs {b}: scored on different test rows (different split or labels)"
    metric = first.params.get("metric") or "accuracy"
    scores_a, scores_b = arrays_a["scores"], arrays_b["scores"]
    if protocol == "knn":
        for record in (first, second):
            knn_metric_name(record, k)
        scores_a = scores_a[list(arrays_a["runs"]).index(k)][None]
        scores_b = scores_b[list(arrays_b["runs"]).index(k)][None]
    n_classes = scores_a.shape[-1]
    classes = np.arange(n_classes)
    return paired_bootstrap(
        a,
        b,
        lambda t, s: metric_from_scores(t, s, metric, classes=classes),
        arrays_a["y_true"],
        scores_a,
        scores_b,
        n_resamples=resamples,
        seed=seed,
    )


def compare_group(
    protocol: str,
    dataset: str,
    records: Sequence[RecordFile],
    *,
    k: int = 20,
    resamples: int = 2000,
    seed: int = 0,
) -> GroupComparison:
    """Rank ``records`` (one per model, all of ``protocol`` on ``dataset``) and compare every
    pair, unadjusted (see :func:`adjust`)."""
    ranking = rank(records, k=k)
    group = GroupComparison(protocol, dataset, ranking)
    if protocol not in PAIRED_PROTOCOLS:
        group.unpaired.append(f"{protocol} records keep no per-item scores to pair")
        return group
    for first, second in itertools.combinations(ranking, 2):
        result = _pair(protocol, first.record, second.record, k=k, resamples=resamples, seed=seed)
        if isinstance(result, str):
            group.unpaired.append(result)
        else:
            group.pairs.append(result)
    return group


def adjust(groups: Sequence[GroupComparison]) -> None:
    """Holm-adjust the p-values of every pair of every group together (one family: all the
    comparisons shown at once), in place."""
    flat = [(g, i) for g in groups for i in range(len(g.pairs))]
    adjusted = holm_adjust([g.pairs[i] for g, i in flat])
    for (g, i), pair in zip(flat, adjusted, strict=True):
        g.pairs[i] = pair


def interval_text(low: float, high: float) -> str:
    """``[lo, hi]`` or "no interval"."""
    if math.isnan(low) or math.isnan(high):
        return "no interval"
    return f"[{number_text(low)}, {number_text(high)}]"
