"""The results table: every record as rows of one long table, one row per (record, metric).

Metrics are read generically from a record's ``metrics`` object, so a new protocol needs no
change here: every numeric entry is a metric; ``<name>_ci`` ([low, high]) and
``<name>_ci95`` (half-width) are the interval of ``<name>``; ``<name>_spread`` (mean, std,
min, max, n over seeds) gives its number of seeds; nested objects of numbers become
``<name>.<key>``; lists (curves) and text are not metrics. A record's *main* metric is its
metric with an interval named by its ``params.metric`` (kNN: at k=20), else its first
metric with an interval, else its first top-level metric (records are stored with sorted
keys: first in alphabetical order; :func:`main_metric`): the one a ranking, a pivot or a
figure shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.errors import ConfigError
from medtransfer.results.collect import RecordFile

#: The long table's columns, in order.
COLUMNS: tuple[str, ...] = (
    "label",
    "model",
    "weights_sha256",
    "dataset",
    "protocol",
    "variant",
    "metric",
    "main",
    "value",
    "low",
    "high",
    "n_seeds",
    "n_eval",
    "preset",
    "split_policy",
    "label_policy",
    "precision",
    "config_hash",
    "created",
    "medtransfer",
    "git_commit",
    "record",
)

#: Parameters that tell apart runs of one protocol on one dataset, shown as ``variant``
#: (those a record has, in this order).
VARIANT_KEYS: tuple[str, ...] = (
    "n_way",
    "n_support",
    "transform",
    "multiview",
    "net",
    "layer",
)

_ANNOTATIONS = ("_ci95", "_ci", "_spread")


@dataclass(frozen=True)
class MetricValue:
    """One metric of a record: its value, interval (NaN when none) and number of seeds
    (None when the record says nothing per metric)."""

    name: str
    value: float
    low: float
    high: float
    n_seeds: int | None

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _annotation_of(key: str, metrics: Mapping[str, Any]) -> bool:
    """Whether ``key`` annotates another metric of ``metrics`` (its interval or spread)."""
    return any(key.endswith(s) and key[: -len(s)] in metrics for s in _ANNOTATIONS)


def metric_values(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[MetricValue]:
    """The metrics of a record's ``metrics`` object, in record order (module docstring)."""
    for key, value in metrics.items():
        if _annotation_of(key, metrics):
            continue
        name = prefix + key
        if isinstance(value, Mapping):
            yield from metric_values(value, prefix=name + ".")
            continue
        if not _number(value):
            continue
        low = high = math.nan
        bounds = metrics.get(f"{key}_ci")
        half = metrics.get(f"{key}_ci95")
        if isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds):
            low, high = float(bounds[0]), float(bounds[1])
        elif _number(half):
            low, high = float(value) - float(half), float(value) + float(half)
        spread = metrics.get(f"{key}_spread")
        n = spread.get("n") if isinstance(spread, Mapping) else None
        yield MetricValue(name, float(value), low, high, int(n) if _number(n) else None)


def main_metric(values: Iterable[MetricValue], dataset_metric: str | None = None) -> str | None:
    """The main metric's name among ``values``: of those with an interval (else of the
    top-level ones, else of all), the
    one named ``dataset_metric`` (a record's ``params.metric`` as a record key, e.g.
    ``accuracy``), else one ending in ``_<dataset_metric>`` at k=20 neighbours (kNN:
    ``k20_accuracy``) or at the smallest k, else the first."""
    values = list(values)
    pool = (
        [v.name for v in values if v.has_interval]
        or [v.name for v in values if "." not in v.name]
        or [v.name for v in values]
    )
    if not pool:
        return None
    if dataset_metric:
        if dataset_metric in pool:
            return dataset_metric
        suffixed = [n for n in pool if n.endswith("_" + dataset_metric)]
        if suffixed:
            if f"k20_{dataset_metric}" in suffixed:
                return f"k20_{dataset_metric}"
            return min(suffixed, key=_natural)
    return pool[0]


def _natural(name: str) -> tuple[object, ...]:
    """Sort key that orders ``k10_x`` before ``k100_x``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def label_policy_text(value: object) -> str:
    """A record's ``label_policy`` in words: ``uncertain=negative`` for the label options a
    dataset uses (a dict in current records, a word in older ones); ``""`` when it has none."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value) if value else ""


def record_metric(params: Mapping[str, Any]) -> str | None:
    """The record key of a record's ``params.metric`` (``mean per-class accuracy`` ->
    ``mean_per_class_accuracy``), or None."""
    metric = params.get("metric")
    return str(metric).replace(" ", "_").replace("-", "_") if metric else None


def variant(params: Mapping[str, Any]) -> str:
    """``key=value`` of the :data:`VARIANT_KEYS` a record's ``params`` set, space-separated."""
    return " ".join(
        f"{k}={params[k]}" for k in VARIANT_KEYS if params.get(k) not in (None, "", False)
    )


def record_seeds(data: Mapping[str, Any]) -> int:
    """How many seeds (repeated runs) a record averages: its ``per_seed`` entries, else its
    ``params.seeds``, else 1."""
    per_seed = data.get("per_seed")
    if isinstance(per_seed, list) and per_seed:
        return len(per_seed)
    seeds = data["params"].get("seeds")
    return len(seeds) if isinstance(seeds, list) and seeds else 1


def evaluated_count(data: Mapping[str, Any]) -> float:
    """How many test items the record's numbers rest on: test rows (``sizes.test``,
    ``test_rows``), few-shot ``pool_rows`` (the images episodes drew from), images
    (``n_images``), else NaN."""
    sizes = data.get("sizes")
    candidates = [
        sizes.get("test") if isinstance(sizes, Mapping) else None,
        data.get("test_rows"),
        data.get("pool_rows"),
        data.get("n_images"),
        data["params"].get("images"),
    ]
    for value in candidates:
        if _number(value):
            return float(value)
    return math.nan


def record_rows(record: RecordFile) -> list[dict[str, Any]]:
    """The long-table rows of one record."""
    data, params = record.data, record.params
    environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    values = list(metric_values(data["metrics"]))
    main = main_metric(values, record_metric(params))
    seeds = record_seeds(data)
    common = {
        "label": record.label,
        "model": data["model"],
        "weights_sha256": data.get("weights_sha256") or "",
        "dataset": data["dataset"],
        "protocol": data["protocol"],
        "variant": variant(params),
        "n_eval": evaluated_count(data),
        "preset": params.get("preset") or "none",
        "split_policy": params.get("split_policy") or "",
        "label_policy": label_policy_text(params.get("label_policy")),
        "precision": params.get("precision") or "",
        "config_hash": data["config_hash"],
        "created": data["created"],
        "medtransfer": environment.get("medtransfer") or "",
        "git_commit": environment.get("git_commit") or "",
        "record": str(record.path),
    }
    return [
        {
            **common,
            "metric": v.name,
            "main": v.name == main,
            "value": v.value,
            "low": v.low,
            "high": v.high,
            "n_seeds": v.n_seeds if v.n_seeds is not None else seeds,
        }
        for v in values
    ]


def split_shared_labels(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a label that stands for several weights (two files both called
    ``best.pt`` give two runs labelled ``supervised_r18@best``) made ``label#<sha256[:8]>``
    on each of its rows with a weights hash, so no table, figure or report ever merges runs
    of different weights; labels with one weights hash stay as they are."""
    hashed = table[table["weights_sha256"] != ""]
    counts = hashed.groupby("label")["weights_sha256"].nunique()
    shared = counts[counts > 1].index
    if shared.empty:
        return table
    table = table.copy()
    rows = table["label"].isin(shared) & (table["weights_sha256"] != "")
    table.loc[rows, "label"] = (
        table.loc[rows, "label"] + "#" + table.loc[rows, "weights_sha256"].str[:8]
    )
    return table


def long_table(records: Iterable[RecordFile]) -> pd.DataFrame:
    """One row per (record, metric), columns :data:`COLUMNS`, sorted by protocol, dataset,
    label, metric and creation time."""
    rows = [row for record in records for row in record_rows(record)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if table.empty:
        return table
    table = split_shared_labels(table)
    table = table.sort_values(["protocol", "dataset", "label", "metric", "created"], kind="stable")
    return table.reset_index(drop=True)


def parse_where(text: str | None) -> dict[str, tuple[str, ...]]:
    """``"protocol=linear,dataset=chexpert|stoic"`` -> {column: accepted values}.

    Raises:
        ConfigError: a clause without ``=`` or a column the table does not have.
    """
    if not text:
        return {}
    clauses: dict[str, tuple[str, ...]] = {}
    for clause in text.split(","):
        if not clause.strip():
            continue
        column, sep, value = clause.partition("=")
        column = column.strip()
        if not sep or not column:
            raise ConfigError(
                f"--where {text!r}: each clause is COLUMN=VALUE (VALUE|VALUE for several), "
                f"e.g. protocol=linear,dataset=chexpert; got {clause!r}."
            )
        if column not in COLUMNS:
            raise ConfigError(f"--where: no column {column!r}; columns: {', '.join(COLUMNS)}.")
        clauses[column] = tuple(v.strip() for v in value.split("|"))
    return clauses


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def filter_rows(table: pd.DataFrame, where: Mapping[str, tuple[str, ...]]) -> pd.DataFrame:
    """The rows whose column values (as text; ``true``/``false`` for booleans) are among the
    accepted ones of every clause of ``where``."""
    keep = pd.Series(True, index=table.index)
    for column, accepted in where.items():
        keep &= table[column].map(_text).isin(accepted)
    return table[keep].reset_index(drop=True)


@dataclass(frozen=True)
class Wide:
    """The pivot of the main metrics: ``values``, ``low``, ``high`` (label × column, NaN where
    a model has no run) and the ``conflicts``: cells several configurations filled (the
    newest is shown), as "label / column: n runs"."""

    values: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    conflicts: list[str]


def wide_column(row: Mapping[str, Any]) -> str:
    """The pivot column of a row: ``protocol dataset [variant] metric``."""
    parts = [row["protocol"], row["dataset"], row["variant"], row["metric"]]
    return " ".join(str(p) for p in parts if p)


def wide_table(table: pd.DataFrame) -> Wide:
    """Labels × (protocol, dataset, variant, metric) of each record's main metric."""
    main = table[table["main"]].copy()
    if main.empty:
        empty = pd.DataFrame()
        return Wide(empty, empty, empty, [])
    main["column"] = [wide_column(row) for row in main.to_dict("records")]
    counts = main.groupby(["label", "column"]).size()
    conflicts = [f"{label} / {column}: {n} runs" for (label, column), n in counts.items() if n > 1]
    newest = main.sort_values("created").groupby(["label", "column"]).tail(1)
    frames = [
        newest.pivot(index="label", columns="column", values=name)
        for name in ("value", "low", "high")
    ]
    order = sorted(frames[0].columns)
    values, low, high = (frame.reindex(columns=order) for frame in frames)
    return Wide(values, low, high, conflicts)


def number_text(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, at least 4 when it is below 1 in magnitude
    (similarities, SSIM, feature errors: two decimals would hide their differences);
    ``digits`` 0 (counts) stays 0."""
    places = max(digits, 4) if digits > 0 and 0 < abs(value) < 1 else digits
    return f"{value:.{places}f}"


def markdown(frame: pd.DataFrame, *, index: bool = False, digits: int = 2) -> str:
    """A GitHub-flavoured markdown table of ``frame``; floats to ``digits`` decimals (more
    below 1: :func:`number_text`), NaN and None as empty cells, 64-hex hashes cut to 12
    characters."""
    shown = frame.reset_index() if index else frame
    headers = [str(c) for c in shown.columns]

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return number_text(value, digits)
        text = str(value)
        if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text):
            return text[:12]
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def write_table(
    frame: pd.DataFrame, fmt: str, out: Path | None, *, index: bool = False, digits: int = 2
) -> str:
    """``frame`` as ``csv``, ``parquet`` or ``markdown``: written to ``out`` when given
    (atomically), else returned as text (parquet needs ``out``).

    Raises:
        ConfigError: parquet without ``--out``, or without pyarrow installed.
    """
    from medtransfer.fsutil import atomic_write_bytes, atomic_write_text

    if fmt == "parquet":
        if out is None:
            raise ConfigError("--format parquet writes a file: give --out FILE.parquet.")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--format parquet needs pyarrow: pip install 'medtransfer[parquet]' "
                "(or use --format csv)."
            ) from None
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=index)
        atomic_write_bytes(out, buffer.getvalue())
        return ""
    if fmt == "csv":
        text = frame.to_csv(index=index)
    elif fmt == "markdown":
        text = markdown(frame, index=index, digits=digits) + "\n"
    else:
        raise ConfigError(f"--format {fmt!r}: choose csv, parquet or markdown.")
    if out is not None:
        atomic_write_text(out, text)
        return ""
    return text
