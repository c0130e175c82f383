"""The original study's table (``results/full_data.csv``) beside ours, cell for cell.

The published values ship as package data (``results/data/full_data.csv``, transcribed
from docs/original-study.md#published-results by ``scripts/transcribe_published.py``):
13 model rows × 92 columns, the original's column names and model names, fractions for
accuracies, uncertainties and attentive diffusion. :func:`paper_cells` fills the same
cells from the results table (our accuracies are percent: divided by 100) and sets each
beside the published value with the difference.

How a column is filled from our records (:func:`column_spec`):

* ``few shot <d> [(<n>way)]``: few-shot records on ``<d>`` with ``n_way`` n (2 when the
  name has no way), main metric / 100; ``... uncertainty``: the interval half-width / 100.
* ``linear <d>``, ``finetune <d>``: the main metric of linear / fine-tuning records / 100.
* ``attentive diffusion <d>``: saliency records' main metric (percent) / 100.
* ``invariance <t> <d>``: invariance records whose ``params.transform`` is t (``hflip``:
  ``h_flip``; ``multiview``: a ``params.multiview`` record), main metric.
* ``perceptual distance <net> <d>``: perceptual-distance records, the metric whose name
  holds the network (``alex``, ``vgg``, ``squeeze``, ``average``), else the main metric of
  a record whose ``params.net`` names it.
* ``imagenet top1``: published only (medtransfer does not train on ImageNet).

A row is a published model when a record's model is that model's catalog entry, with its
own weights (no ``--weights``) and no other label; any other run is a row of its own.
When several records fill one cell, the one whose settings match the published run best
is shown (``--preset original`` first, then the newest), and ``notes`` says how its
settings differ from the published ones.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd

#: full_data.csv dataset tokens -> catalog names.
DATASETS: dict[str, str] = {
    "shenzhencxr": "shenzhencxr",
    "montgomerycxr": "montgomerycxr",
    "bach": "bach",
    "iChallengeAMD": "ichallenge_amd",
    "iChallengePM": "ichallenge_pm",
    "chexpert": "chexpert",
    "stoic": "stoic",
    "diabetic retinopathy": "diabetic_retinopathy",
    "chestx": "chestx",
    "cifar10": "cifar10",
    "imagenet": "imagenet",
}
#: invariance column tokens -> ``params.transform`` values.
TRANSFORMS = {"hflip": "h_flip", "rotation": "rotation", "hue": "hue", "multiview": "multiview"}
#: perceptual-distance column tokens -> the text a metric name or ``params.net`` holds.
NETS = {"alexnet": "alex", "vgg": "vgg", "squeezenet": "squeeze", "average": "average"}
#: What the published few-shot runs used (docs/original-study.md#published-results).
PUBLISHED_FEW_SHOT = {"n_support": 20, "n_query": 15, "iter_num": 600}


@dataclass(frozen=True)
class ColumnSpec:
    """How one full_data.csv column is filled: records of ``protocol`` on ``dataset`` whose
    params hold ``params`` (a None value: the key is absent or null), ``part``: ``value``
    or ``half`` (the interval half-width), ``metric_hint``: text the metric's name must
    hold (None: the main metric), ``scale``: factor from our unit to the column's."""

    column: str
    protocol: str | None
    dataset: str | None
    params: tuple[tuple[str, Any], ...] = ()
    part: str = "value"
    metric_hint: str | None = None
    scale: float = 1.0


@cache
def published_table() -> pd.DataFrame:
    """The published full_data.csv: index ``Models`` (the original's names), 91 columns;
    numbers as floats (NaN for an empty cell), ``Model Type`` as text."""
    text = resources.files("medtransfer.results").joinpath("data/full_data.csv").read_text()
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], rows[1:]
    frame = pd.DataFrame(body, columns=header).set_index("Models")
    for column in frame.columns:
        if column != "Model Type":
            frame[column] = pd.to_numeric(frame[column].replace("", math.nan))
    return frame


@dataclass(frozen=True)
class PublishedModel:
    """A model row of full_data.csv: its name there, the original's command-line name, its
    type (SSL, Supervised, Medical SSL) and medtransfer's catalog name."""

    full_data: str
    original_cli: str
    model_type: str
    catalog: str


@cache
def published_models() -> tuple[PublishedModel, ...]:
    """The 13 published models, in full_data.csv's order."""
    from medtransfer.models.catalog import get_model_spec

    text = resources.files("medtransfer.results").joinpath("data/models.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return tuple(
        PublishedModel(
            r["full_data"],
            r["original_cli"],
            r["model_type"],
            get_model_spec(r["original_cli"]).name,
        )
        for r in rows
    )


def column_spec(column: str) -> ColumnSpec:
    """How ``column`` of full_data.csv is filled from our records (module docstring)."""
    found = re.fullmatch(r"few shot (.+?)(?: \((\d)way\))?( uncertainty)?", column)
    if found:
        token, way, half = found.groups()
        return ColumnSpec(
            column,
            "few-shot",
            DATASETS[token],
            (("n_way", int(way or 2)),),
            "half" if half else "value",
            scale=0.01,
        )
    for prefix, protocol in (("linear ", "linear"), ("finetune ", "finetune")):
        if column.startswith(prefix):
            return ColumnSpec(column, protocol, DATASETS[column[len(prefix) :]], scale=0.01)
    if column.startswith("attentive diffusion "):
        token = column[len("attentive diffusion ") :]
        return ColumnSpec(column, "saliency", DATASETS[token], scale=0.01)
    if column.startswith("invariance "):
        kind, token = column[len("invariance ") :].split(" ", 1)
        params = (
            (("multiview", True),) if kind == "multiview" else (("transform", TRANSFORMS[kind]),)
        )
        return ColumnSpec(column, "invariance", DATASETS[token], params)
    if column.startswith("perceptual distance "):
        net, token = column[len("perceptual distance ") :].split(" ", 1)
        return ColumnSpec(column, "perceptual-distance", DATASETS[token], metric_hint=NETS[net])
    return ColumnSpec(column, None, None)


def value_columns() -> list[str]:
    """full_data.csv's 89 value columns (not ``Model Type``, ``Marker Size``)."""
    return [c for c in published_table().columns if c not in ("Model Type", "Marker Size")]


def paper_row(record: Mapping[str, Any]) -> str:
    """The full_data.csv row a record belongs to: the published model's name there, or the
    run's label (``params.label``, else its model) for any other run."""
    params = record["params"]
    label = params.get("label") or record["model"]
    if params.get("weights") or label != record["model"]:
        return str(label)
    for model in published_models():
        if model.catalog == record["model"]:
            return model.full_data
    return str(label)


def _params_match(params: Mapping[str, Any], wanted: tuple[tuple[str, Any], ...]) -> bool:
    for key, value in wanted:
        if key == "multiview":
            if not params.get("multiview"):
                return False
        elif params.get(key) != value:
            return False
    return True


def settings_notes(spec: ColumnSpec, record: Mapping[str, Any]) -> str:
    """How a record's settings differ from the published run's, for people."""
    params = record["params"]
    notes = []
    if spec.protocol == "few-shot":
        for key, value in PUBLISHED_FEW_SHOT.items():
            if params.get(key) != value:
                notes.append(f"{key}={params.get(key)} (published {value})")
    if (params.get("preset") or "none") != "original":
        notes.append("corrected defaults (not --preset original)")
    if params.get("split_policy") not in (None, "original"):
        notes.append(f"{params.get('split_policy')} split")
    return "; ".join(notes)


def _pick_metric(rows: pd.DataFrame, hint: str | None) -> pd.Series | None:
    """The row of a record's metrics that fills a cell: the metric whose name holds
    ``hint`` (None: the main metric)."""
    if hint is None:
        chosen = rows[rows["main"]]
    else:
        chosen = rows[rows["metric"].str.contains(hint, regex=False)]
    return None if chosen.empty else chosen.iloc[0]


def _candidates(
    table: pd.DataFrame, records: Mapping[str, Mapping[str, Any]], spec: ColumnSpec
) -> list[tuple[str, pd.Series, Mapping[str, Any]]]:
    """(row name, metric row, record) of every record that can fill ``spec``'s column."""
    out = []
    subset = table[(table["protocol"] == spec.protocol) & (table["dataset"] == spec.dataset)]
    for path, rows in subset.groupby("record", sort=False):
        record = records[path]
        if not _params_match(record["params"], spec.params):
            continue
        hint = spec.metric_hint
        row = _pick_metric(rows, hint)
        if row is None and hint is not None and hint in str(record["params"].get("net", "")):
            row = _pick_metric(rows, None)
        if row is not None:
            out.append((paper_row(record), row, record))
    return out


def paper_cells(table: pd.DataFrame, records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Our cells of full_data.csv beside the published ones.

    ``table``: the long results table; ``records``: record path -> record JSON (the
    ``record`` column's keys). One row per (model row, column) where we have a value:
    ``Models``, ``column``, ``ours``, ``published`` (NaN when the original has no such
    cell), ``difference`` (ours - published), ``ours_low``/``ours_high`` (our interval in
    the column's unit, where one exists), ``notes`` (settings that differ from the
    published run), ``runs`` (records that could fill the cell) and ``record``.
    """
    published = published_table()
    out = []
    for column in value_columns():
        spec = column_spec(column)
        if spec.protocol is None:
            continue
        by_row: dict[str, list[tuple[pd.Series, Mapping[str, Any]]]] = {}
        for name, row, record in _candidates(table, records, spec):
            by_row.setdefault(name, []).append((row, record))
        for name, found in by_row.items():
            row, record = min(
                found,
                key=lambda item: (
                    (item[1]["params"].get("preset") or "none") != "original",
                    _negated(item[1]["created"]),
                ),
            )
            if spec.part == "half":
                if math.isnan(row["high"]):
                    continue
                ours = (row["high"] - row["low"]) / 2 * spec.scale
                low = high = math.nan
            else:
                ours = row["value"] * spec.scale
                low, high = row["low"] * spec.scale, row["high"] * spec.scale
            reference = published.at[name, column] if name in published.index else math.nan
            out.append(
                {
                    "Models": name,
                    "column": column,
                    "ours": ours,
                    "published": reference,
                    "difference": ours - reference,
                    "ours_low": low,
                    "ours_high": high,
                    "notes": settings_notes(spec, record),
                    "runs": len(found),
                    "record": row["record"],
                }
            )
    return pd.DataFrame(
        out,
        columns=[
            "Models",
            "column",
            "ours",
            "published",
            "difference",
            "ours_low",
            "ours_high",
            "notes",
            "runs",
            "record",
        ],
    )


def _published_metric(spec: ColumnSpec) -> str:
    """The metric name a published column stands for, as our records name it."""
    if spec.protocol == "saliency":
        return "attentive_diffusion"
    if spec.protocol == "invariance":
        return "similarity"
    if spec.protocol == "perceptual-distance":
        return f"lpips_{spec.metric_hint}"
    if spec.protocol in ("linear", "finetune"):
        from medtransfer.data.catalog import get_dataset_spec
        from medtransfer.protocols.metrics import metric_key

        return metric_key(get_dataset_spec(str(spec.dataset)).metric)
    return "accuracy"


def _negated(created: str) -> tuple[int, ...]:
    """A sort key that orders ``created`` stamps newest first."""
    return tuple(-ord(c) for c in created)


def paper_wide(cells: pd.DataFrame) -> pd.DataFrame:
    """full_data.csv's shape with ours beside the published: the published models' rows
    (then any other run's), and for each of the 89 value columns C the columns C (ours),
    ``C (published)`` and ``C (difference)``; ``Model Type`` last."""
    published = published_table()
    names = list(published.index) + sorted(set(cells["Models"]) - set(published.index))
    ours = cells.pivot(index="Models", columns="column", values="ours") if len(cells) else None
    columns: dict[str, Any] = {}
    for column in value_columns():
        mine = (
            ours[column].reindex(names)
            if ours is not None and column in ours.columns
            else pd.Series(math.nan, index=names)
        ).astype(float)
        theirs = published[column].reindex(names).astype(float)
        columns[column] = mine.to_numpy()
        columns[f"{column} (published)"] = theirs.to_numpy()
        columns[f"{column} (difference)"] = (mine - theirs).to_numpy()
    columns["Model Type"] = published["Model Type"].reindex(names).fillna("").to_numpy()
    frame = pd.DataFrame(columns, index=pd.Index(names, name="Models"))
    return frame


def published_long() -> pd.DataFrame:
    """The published numbers as rows of the long results table (label = the full_data
    name, accuracies and attentive diffusion in percent like our records, intervals from
    the few-shot uncertainty), so every figure can be drawn from the paper's own numbers."""
    from medtransfer.results.table import COLUMNS

    published = published_table()
    catalog = {m.full_data: m.catalog for m in published_models()}
    rows = []
    for column in value_columns():
        spec = column_spec(column)
        if spec.protocol is None or spec.part == "half":
            continue
        for name, value in published[column].items():
            if math.isnan(value):
                continue
            low = high = math.nan
            if spec.protocol == "few-shot":
                half = published.at[name, column + " uncertainty"]
                low, high = value - half, value + half
            variant = " ".join(f"{k}={v}" for k, v in spec.params)
            if spec.protocol == "few-shot":
                variant += f" n_support={PUBLISHED_FEW_SHOT['n_support']}"
            rows.append(
                {
                    "label": name,
                    "model": catalog[name],
                    "dataset": spec.dataset,
                    "protocol": spec.protocol,
                    "variant": variant,
                    "metric": _published_metric(spec),
                    "main": True,
                    "value": value / spec.scale,
                    "low": low / spec.scale,
                    "high": high / spec.scale,
                    "n_seeds": 1,
                    "preset": "published",
                    "record": f"published:{column}",
                    "created": "",
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
