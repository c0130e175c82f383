"""One self-contained HTML report of the records under a results root.

What was run (models, datasets, protocols, presets, policies, machine, versions), a ranking
per (protocol, dataset) with intervals and the paired verdicts, our cells beside the
published ones, every figure (embedded as SVG data URIs), plain warnings where a number
rests on little, and the whole long table. No network fetch of any kind: styles, the
sorting script and the figures are inside the file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import medtransfer
from medtransfer.results.collect import RecordFile, Skipped
from medtransfer.results.compare import (
    GroupComparison,
    adjust,
    compare_group,
    interval_text,
)
from medtransfer.results.plots import FigureFile, all_figures
from medtransfer.results.table import COLUMNS, label_policy_text, long_table, number_text

#: Fewer test items than this and a number "rests on few images".
FEW_IMAGES = 100

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1d2329;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #d5d9de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4}table.sortable th{cursor:pointer}
table.sortable th:after{content:" \\2195";color:#889}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff6e0;border-left:4px solid #e0a100;padding:.5rem 1rem}
.verdict-yes{color:#0b6b2c;font-weight:600}.verdict-no{color:#555}
figure{margin:1rem 0;border:1px solid #e3e6ea;padding:.5rem}figure img{max-width:100%;height:auto}
figcaption{font-size:.8rem;color:#444}code{font-size:.85em}details{margin:.5rem 0}
"""

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('data-order') !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', ascending ? 'asc' : 'desc');
      function key(row) {
        var cell = row.cells[column];
        var text = cell.getAttribute('data-sort') || cell.textContent;
        var number = parseFloat(text);
        return isNaN(number) ? text.toLowerCase() : number;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="num" data-sort=""></td>'
    return f'<td class="num" data-sort="{value!r}">{number_text(value, digits)}</td>'


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, ident: str, sortable: bool = True
) -> str:
    """A table; each row is a list of ready ``<td>`` cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    return (
        f'<table id="{_e(ident)}"{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _td(value: object) -> str:
    return f"<td>{_e(value)}</td>"


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows: the records (newest per configuration unless the caller
    chose otherwise), the files skipped, where figures go, the user's notes, and the
    paired-comparison settings."""

    records: list[RecordFile]
    skipped: list[Skipped]
    figures_dir: Path
    notes: tuple[str, ...] = ()
    k: int = 20
    resamples: int = 2000
    seed: int = 0
    alpha: float = 0.05


def comparison_groups(
    records: Sequence[RecordFile], *, k: int, resamples: int, seed: int
) -> list[GroupComparison]:
    """A ranking (and, for paired protocols, every pair compared) per (protocol, dataset,
    variant, manifest): the newest record of each label; Holm over all pairs together."""
    from medtransfer.results.table import variant

    buckets: dict[tuple[str, str, str, str], dict[str, RecordFile]] = {}
    for record in sorted(records, key=lambda r: r.data["created"]):
        data = record.data
        key = (
            data["protocol"],
            data["dataset"],
            variant(record.params),
            str(data.get("manifest_hash", "")),
        )
        buckets.setdefault(key, {})[record.label] = record
    groups = []
    for (protocol, dataset, shape, _), by_label in sorted(buckets.items()):
        chosen = list(by_label.values())
        title = f"{dataset}{' (' + shape + ')' if shape else ''}"
        try:
            group = compare_group(protocol, title, chosen, k=k, resamples=resamples, seed=seed)
        except Exception as exc:  # a malformed sidecar must not sink the report
            group = GroupComparison(protocol, title, [], unpaired=[f"not compared: {exc}"])
        groups.append(group)
    adjust(groups)
    return groups


def warnings_for(table: pd.DataFrame, notes: Sequence[str]) -> list[str]:
    """Plain warnings where the numbers rest on little."""
    out = [f"Note from whoever made this report: {n}" for n in notes]
    main = table[table["main"]] if len(table) else table
    few = main[main["n_eval"] < FEW_IMAGES]
    for (protocol, dataset), rows in few.groupby(["protocol", "dataset"]):
        n = int(rows["n_eval"].min())
        out.append(
            f"{protocol} on {dataset} rests on few images ({n} test rows or pool images): "
            "treat its ranking as a smoke test, not evidence."
        )
    if len(main) and (main["protocol"] == "few-shot").any():
        out.append(
            "Few-shot intervals (±1.96·std/√episodes) reflect episode resampling only: the "
            "same images recur across episodes, so they understate the uncertainty about the "
            "dataset (other images, other patients). The paired verdicts share that limit."
        )
    single = main[(main["n_seeds"] <= 1) & main["protocol"].isin(["linear", "knn", "finetune"])]
    if len(single):
        protocols = ", ".join(sorted(set(single["protocol"])))
        out.append(
            f"One seed per run ({protocols}): bootstrap intervals resample test rows only, not "
            "the validation draw or training randomness (use --seeds for a spread)."
        )
    return out


def _what_was_run(records: Sequence[RecordFile], table: pd.DataFrame) -> str:
    def values(getter) -> str:
        seen = sorted({str(v) for r in records if (v := getter(r)) not in (None, "")})
        return ", ".join(seen) or "—"

    env = lambda key: lambda r: (r.data.get("environment") or {}).get(key)  # noqa: E731
    rows = [
        ("models", values(lambda r: r.label)),
        ("datasets", values(lambda r: r.data["dataset"])),
        ("protocols", values(lambda r: r.data["protocol"])),
        ("presets", values(lambda r: r.params.get("preset") or "none")),
        ("split policies", values(lambda r: r.params.get("split_policy"))),
        ("label policies", values(lambda r: label_policy_text(r.params.get("label_policy")))),
        ("precision", values(lambda r: r.params.get("precision"))),
        ("devices", values(env("device_name")) if values(env("device_name")) != "—" else ""),
        ("device kinds", values(env("device"))),
        ("platforms", values(env("platform"))),
        ("python / torch", f"{values(env('python'))} / {values(env('torch'))}"),
        ("medtransfer versions", values(env("medtransfer"))),
        ("git commits", values(env("git_commit"))),
        ("records", str(len(records))),
    ]
    return _table(
        ["what", "values"],
        ([_td(k), _td(v)] for k, v in rows if v),
        ident="what-was-run",
        sortable=False,
    )


def _ranking_html(group: GroupComparison, alpha: float) -> str:
    rows = []
    for place, item in enumerate(group.ranking, 1):
        rows.append(
            [
                _num(float(place), 0),
                _td(item.label),
                _td(item.metric),
                _num(item.value),
                _td(interval_text(item.low, item.high)),
                _td(item.record.path.name),
            ]
        )
    ident = f"rank-{group.protocol}-{group.dataset}"
    parts = [
        f"<h3>{_e(group.protocol)} on {_e(group.dataset)}</h3>",
        _table(["#", "model", "metric", "value", "95% interval", "record"], rows, ident=ident),
    ]
    if group.pairs:
        items = []
        for pair in group.pairs:
            cls = "verdict-yes" if pair.detected(alpha) else "verdict-no"
            items.append(f'<li class="{cls}">{_e(pair.verdict(alpha))}</li>')
        parts.append(f'<ul class="verdicts">{"".join(items)}</ul>')
    for reason in group.unpaired:
        parts.append(f'<p class="verdict-no">Not compared: {_e(reason)}</p>')
    return "".join(parts)


def _paper_html(table: pd.DataFrame, records: Sequence[RecordFile]) -> str:
    from medtransfer.results.paper import paper_cells

    cells = paper_cells(table, {str(r.path): r.data for r in records}) if len(table) else None
    if cells is None or cells.empty:
        return (
            "<p>None of these records fills a cell of the original's full_data.csv (its "
            "models, datasets and n-way), so there is nothing to set beside the published "
            "numbers.</p>"
        )
    rows = [
        [
            _td(row.Models),
            _td(row.column),
            _num(row.ours, 4),
            _num(row.published, 4),
            _num(row.difference, 4),
            _td(row.notes),
        ]
        for row in cells.itertuples()
    ]
    return (
        "<p>Cells of the original's <code>results/full_data.csv</code> (fractions) that these "
        "records fill, beside the published value (empty where the original has none). "
        "Read the notes: a cell run with other settings is not a replication.</p>"
        + _table(
            ["model", "column", "ours", "published", "difference", "notes"],
            rows,
            ident="paper-cells",
        )
    )


def _figure_html(figure: FigureFile) -> str:
    data = base64.b64encode(figure.svg.read_bytes()).decode("ascii")
    notes = "".join(f"<li>{_e(n)}</li>" for n in figure.notes)
    caption = f"<figcaption><b>{_e(figure.title)}</b>"
    caption += f"<ul>{notes}</ul></figcaption>" if notes else "</figcaption>"
    return (
        f'<figure><img class="figure" alt="{_e(figure.title)}" '
        f'src="data:image/svg+xml;base64,{data}">{caption}</figure>'
    )


#: Long-table columns the report leaves out (hashes and versions are in "What was run").
_HIDDEN = ("model", "weights_sha256", "main", "config_hash", "medtransfer", "git_commit")


def _long_html(table: pd.DataFrame) -> str:
    columns = [c for c in COLUMNS if c not in _HIDDEN]
    rows = []
    for row in table[columns].itertuples(index=False):
        cells = []
        for name, value in zip(columns, row, strict=True):
            if name in ("value", "low", "high"):
                cells.append(_num(value))
            elif name == "n_eval":
                cells.append(_num(value, 0))
            elif name == "record":
                cells.append(_td(Path(str(value)).name))
            else:
                cells.append(_td(value))
        rows.append(cells)
    return _table(columns, rows, ident="long-table")


def render(inputs: ReportInputs) -> str:
    """The report as one HTML document."""
    records = inputs.records
    table = long_table(records)
    groups = comparison_groups(records, k=inputs.k, resamples=inputs.resamples, seed=inputs.seed)
    figures = all_figures(table, inputs.figures_dir)
    warnings = warnings_for(table, inputs.notes)
    n_pairs = sum(len(g.pairs) for g in groups)
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>medtransfer report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>medtransfer report: which backbone, and why?</h1>",
        f"<p>{len(records)} records; made {_e(created)} by medtransfer "
        f"{_e(medtransfer.__version__)}.</p>",
    ]
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(
            f'<section class="warn" id="warnings"><h2>Read this first</h2>'
            f"<ul>{items}</ul></section>"
        )
    parts += ["<h2>What was run</h2>", _what_was_run(records, table)]
    parts.append("<h2>Rankings and paired verdicts</h2>")
    parts.append(
        f"<p>Models ranked by their main metric with its 95% interval. Models scored on the "
        f"same episodes (few-shot) or test rows (linear, kNN at k={inputs.k}) are compared pair "
        f"by pair; p-values are Holm-adjusted over all {n_pairs} comparisons of this report "
        f"(level {inputs.alpha}).</p>"
    )
    parts += [_ranking_html(g, inputs.alpha) for g in groups] or ["<p>No records.</p>"]
    parts += ["<h2>Published numbers beside ours</h2>", _paper_html(table, records)]
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(f) for f in figures]
    parts += [
        "<h2>All results</h2>",
        "<details open><summary>The long table: one row per (record, metric); click a "
        "header to sort.</summary>",
        _long_html(table),
        "</details>",
    ]
    if inputs.skipped:
        items = "".join(
            f"<li><code>{_e(s.path)}</code>: {_e(s.reason)}</li>" for s in inputs.skipped
        )
        parts.append(f'<h2>Files skipped</h2><ul id="skipped">{items}</ul>')
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(
    records: Sequence[RecordFile],
    out: Path,
    *,
    skipped: Sequence[Skipped] = (),
    notes: Sequence[str] = (),
    k: int = 20,
    resamples: int = 2000,
    alpha: float = 0.05,
) -> Path:
    """Render the report of ``records`` to ``out`` (atomically; its figures' files go to
    ``<out stem>_figures/`` beside it) and return ``out``."""
    from medtransfer.fsutil import atomic_write_text

    inputs = ReportInputs(
        list(records),
        list(skipped),
        out.parent / f"{out.stem}_figures",
        notes=tuple(notes),
        k=k,
        resamples=resamples,
        alpha=alpha,
    )
    return atomic_write_text(out, render(inputs))
