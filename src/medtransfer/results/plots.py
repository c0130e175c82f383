"""Figures from the results table, and only from it (never protocol code): the few-shot
radar per model, per-dataset bars with intervals, and transfer performance against
attentive diffusion, invariance and perceptual distance with Pearson r, p and a weighted
least-squares line.

Each figure is written as PNG and SVG. A figure never drops data silently: where a value
is missing it says which (model, dataset) it left out and why, and a figure with nothing
to show says what the table lacks. The original's scripts dropped EyePACS and ChestX from
some plots for a column-name mismatch and computed "shared models" wrongly
(docs/original-study.md#defect-e45, #defect-e46, #defect-e47); here every dataset with a
value on both axes is drawn, whatever its n-way.

Departure from the original: in the property plots the transfer score is on the y axis,
since the weighted fit weighs each point by the interval of the transfer score (σ =
half-width), which must be the dependent variable's; the original put accuracy on x.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: The property figures: title, protocol of the property's records, text the metric or
#: variant must hold (None: the main metric), and how the panels split (a params key
#: shown in ``variant``, or None).
PROPERTIES: dict[str, tuple[str, str | None, str | None]] = {
    "attentive diffusion": ("saliency", None, None),
    "invariance": ("invariance", None, "transform"),
    "perceptual distance": ("perceptual-distance", "average", None),
}
#: Transfer protocols on the y axis of the property figures.
TRANSFER = ("few-shot", "linear", "finetune")
#: Colours by model type, as the original (blues SSL, reds supervised, greens medical).
TYPE_COLOURS = {
    "SSL": "#1f5fa8",
    "Supervised": "#c0392b",
    "Medical SSL": "#2e8b57",
    "random": "#7f7f7f",
    "other": "#8e44ad",
}


@dataclass
class FigureFile:
    """A written figure: ``name`` (file stem), ``title``, the ``png`` and ``svg`` paths and
    the ``notes`` it states (what it left out, what it rests on)."""

    name: str
    title: str
    png: Path
    svg: Path
    notes: list[str] = field(default_factory=list)


def model_type(model: str) -> str:
    """SSL, Supervised, Medical SSL (the published models), random, or other."""
    from medtransfer.results.paper import published_models

    if model.startswith("random"):
        return "random"
    for published in published_models():
        if published.catalog == model:
            return published.model_type
    return "other"


def _colour(table: pd.DataFrame, label: str) -> str:
    models = table.loc[table["label"] == label, "model"]
    return TYPE_COLOURS[model_type(str(models.iloc[0]))] if len(models) else TYPE_COLOURS["other"]


def _n_way(variant: str) -> str:
    found = re.search(r"n_way=(\d+)", variant or "")
    return f" {found.group(1)}-way" if found else ""


def _variant_value(variant: str, key: str | None) -> str:
    """The value of ``key`` in a ``variant`` text (``transform=h_flip`` -> ``h_flip``)."""
    found = re.search(rf"\b{key}=(\S+)", variant or "") if key else None
    return found.group(1) if found else ""


def _panel_kind(variant: str, key: str | None) -> str:
    """What splits the property panels: the ``key`` value in ``variant`` (an invariance
    transform), or ``multiview`` for a multi-view invariance record."""
    if key is None:
        return ""
    return _variant_value(variant, key) or ("multiview" if "multiview=True" in variant else "")


def _newest(rows: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per ``keys`` (the newest) and notes on the cells several runs filled."""
    ordered = rows.sort_values("created", kind="stable")
    counts = ordered.groupby(list(keys)).size()
    notes = [
        f"{' / '.join(str(k) for k in key)}: {n} runs, the newest shown"
        for key, n in counts.items()
        if n > 1
    ]
    return ordered.groupby(list(keys)).tail(1), notes


def _save(
    fig, out_dir: Path, name: str, title: str, notes: list[str], *, draw_notes: bool = True
) -> FigureFile:
    """Write ``fig`` as ``name``.png and .svg (reproducible bytes), with its notes below
    (unless ``draw_notes`` is False: the figure already says them)."""
    import matplotlib

    from medtransfer.fsutil import atomic_write_bytes

    if notes and draw_notes:
        shown = notes[:12] + ([f"... and {len(notes) - 12} more notes"] if len(notes) > 12 else [])
        height = fig.get_figheight()
        bottom = min(0.45, (0.16 * len(shown) + 0.15) / height)
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
        fig.text(0.01, 0.005, "\n".join(shown), fontsize=7, va="bottom", ha="left", wrap=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with matplotlib.rc_context({"svg.hashsalt": "medtransfer", "svg.fonttype": "path"}):
        for ext in ("png", "svg"):
            import io

            buffer = io.BytesIO()
            metadata = {"Date": None} if ext == "svg" else {"Software": None}
            fig.savefig(buffer, format=ext, dpi=110, metadata=metadata)
            paths[ext] = atomic_write_bytes(out_dir / f"{name}.{ext}", buffer.getvalue())
    return FigureFile(name, title, paths["png"], paths["svg"], list(notes))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _message_figure(out_dir: Path, name: str, title: str, message: str) -> FigureFile:
    """A figure that says what is missing instead of drawing nothing."""
    fig = _figure(7, 2.2)
    fig.suptitle(title)
    fig.text(0.5, 0.45, message, ha="center", va="center", wrap=True, fontsize=10)
    return _save(fig, out_dir, name, title, [message], draw_notes=False)


def radar(table: pd.DataFrame, out_dir: Path) -> FigureFile:
    """The few-shot radar: one polar panel per model, one axis per (dataset, n-way), the
    main few-shot metric (accuracy, %) with its interval as a band."""
    title = "Few-shot accuracy per model (radar)"
    rows = table[(table["protocol"] == "few-shot") & table["main"]].copy()
    if rows.empty:
        return _message_figure(
            out_dir, "fewshot_radar", title, "No few-shot records in the results table."
        )
    rows["axis"] = rows["dataset"] + rows["variant"].map(_n_way)
    rows, notes = _newest(rows, ["label", "axis"])
    axes_names = sorted(rows["axis"].unique())
    labels = list(dict.fromkeys(rows.sort_values("label")["label"]))
    if len(axes_names) < 3:
        found = ", ".join(axes_names)
        return _message_figure(
            out_dir,
            "fewshot_radar",
            title,
            f"A radar needs few-shot results on at least 3 datasets; the table has "
            f"{len(axes_names)} ({found}). See the per-dataset bars.",
        )
    n = len(labels)
    cols = min(n, 3)
    fig = _figure(4.2 * cols, 4.2 * math.ceil(n / cols) + 0.6)
    fig.suptitle(title)
    angles = np.linspace(0, 2 * np.pi, len(axes_names), endpoint=False)
    closed = np.append(angles, angles[0])
    for i, label in enumerate(labels):
        ax = fig.add_subplot(math.ceil(n / cols), cols, i + 1, projection="polar")
        mine = rows[rows["label"] == label].set_index("axis").reindex(axes_names)
        values = mine["value"].to_numpy(dtype=float)
        colour = _colour(table, label)
        ax.plot(closed, np.append(values, values[0]), color=colour, marker="o", markersize=3)
        low = mine["low"].to_numpy(dtype=float)
        high = mine["high"].to_numpy(dtype=float)
        if not np.all(np.isnan(low)):
            ax.fill_between(
                closed, np.append(low, low[0]), np.append(high, high[0]), color=colour, alpha=0.25
            )
        ax.set_xticks(angles)
        ax.set_xticklabels(axes_names, fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_title(label, fontsize=9)
        for axis, value in zip(axes_names, values, strict=True):
            if math.isnan(value):
                notes.append(f"{label}: no few-shot value on {axis} (gap in its polygon)")
    return _save(fig, out_dir, "fewshot_radar", title, notes)


def dataset_bars(table: pd.DataFrame, out_dir: Path) -> list[FigureFile]:
    """One figure per dataset: a panel per (protocol, variant, metric), a bar per model
    with its interval as an error bar (and "no interval" where the record has none)."""
    rows = table[table["main"]].copy()
    if rows.empty:
        return [_message_figure(out_dir, "bars", "Per-dataset results", "No records.")]
    figures = []
    for dataset, per_dataset in rows.groupby("dataset", sort=True):
        per_dataset = per_dataset.copy()
        per_dataset["panel"] = (
            per_dataset["protocol"]
            + per_dataset["variant"].map(lambda v: f" ({v})" if v else "")
            + ": "
            + per_dataset["metric"]
        )
        chosen, notes = _newest(per_dataset, ["panel", "label"])
        panels = sorted(chosen["panel"].unique())
        title = f"{dataset}: main metric per model, 95% intervals"
        fig = _figure(max(5.0, 1.2 + 0.7 * chosen["label"].nunique()), 3.0 * len(panels) + 0.8)
        fig.suptitle(title)
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(len(panels), 1, i + 1)
            part = chosen[chosen["panel"] == panel].sort_values("value", ascending=False)
            x = np.arange(len(part))
            values = part["value"].to_numpy(dtype=float)
            low = part["low"].to_numpy(dtype=float)
            high = part["high"].to_numpy(dtype=float)
            colours = [_colour(table, label) for label in part["label"]]
            ax.bar(x, values, color=colours, alpha=0.85)
            has = ~np.isnan(low)
            if has.any():
                ax.errorbar(
                    x[has],
                    values[has],
                    yerr=np.vstack([values[has] - low[has], high[has] - values[has]]),
                    fmt="none",
                    ecolor="black",
                    capsize=3,
                )
            for xi, value, with_ci in zip(x, values, has, strict=True):
                ax.annotate(
                    f"{value:.3g}" + ("" if with_ci else "\nno interval"),
                    (xi, value),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            ax.set_xticks(x)
            ax.set_xticklabels(part["label"], rotation=20, ha="right", fontsize=8)
            ax.set_title(panel, fontsize=9)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")
        figures.append(_save(fig, out_dir, f"bars_{safe}", title, notes))
    return figures


@dataclass(frozen=True)
class Fit:
    """Pearson r and two-sided p of the points, and the least-squares line ``slope · x +
    intercept``, weighted by 1/σ² when every point has an interval (``weighted``), with its
    reduced χ² (n − 2 degrees of freedom; NaN unweighted)."""

    n: int
    r: float
    p: float
    slope: float
    intercept: float
    weighted: bool
    reduced_chi2: float


def fit_line(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> Fit:
    """Pearson r, p (scipy.stats.pearsonr) and the (weighted) least-squares line of y on x
    (as the original notebooks: ``curve_fit`` with σ = the uncertainty)."""
    from scipy import stats

    x, y, sigma = (np.asarray(a, dtype=float) for a in (x, y, sigma))
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Fit(n, math.nan, math.nan, math.nan, math.nan, False, math.nan)
    r, p = stats.pearsonr(x, y)
    weighted = bool(np.all(np.isfinite(sigma)) and np.all(sigma > 0))
    w = 1 / sigma**2 if weighted else np.ones(n)
    design = np.vstack([x, np.ones(n)]).T
    slope, intercept = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
    chi2 = math.nan
    if weighted:
        chi2 = float(np.sum(((y - (slope * x + intercept)) / sigma) ** 2) / (n - 2))
    return Fit(n, float(r), float(p), float(slope), float(intercept), weighted, chi2)


def _property_rows(table: pd.DataFrame, protocol: str, hint: str | None) -> pd.DataFrame:
    rows = table[table["protocol"] == protocol]
    if hint is not None:
        hinted = rows[
            rows["metric"].str.contains(hint, regex=False)
            | rows["variant"].str.contains(hint, regex=False)
        ]
        return hinted if not hinted.empty else rows[rows["main"]]
    return rows[rows["main"]]


def property_figure(table: pd.DataFrame, prop: str, out_dir: Path) -> FigureFile:
    """Transfer performance (y) against ``prop`` (x) per dataset, transfer protocol and
    (invariance) transform: a point per model, Pearson r and p, the weighted least-squares
    line (σ = the transfer score's interval half-width)."""
    protocol, hint, split = PROPERTIES[prop]
    name = "transfer_vs_" + prop.replace(" ", "_")
    title = f"Transfer performance vs {prop}"
    props = _property_rows(table, protocol, hint)
    if props.empty:
        return _message_figure(
            out_dir,
            name,
            title,
            f"No {prop} values: the results table has no '{protocol}' records "
            f"(run `medtransfer {protocol}` first).",
        )
    props = props.copy()
    props["kind"] = props["variant"].map(lambda v: _panel_kind(v, split))
    props, notes = _newest(props, ["label", "dataset", "kind"])
    transfer = table[table["protocol"].isin(TRANSFER) & table["main"]].copy()
    transfer["setting"] = transfer["protocol"] + transfer["variant"].map(_n_way)
    transfer, more = _newest(transfer, ["label", "dataset", "setting"])
    notes += more
    panels = []
    for (dataset, kind), p_rows in props.groupby(["dataset", "kind"], sort=True):
        t_rows = transfer[transfer["dataset"] == dataset]
        if t_rows.empty:
            notes.append(f"{prop} on {dataset}{' ' + kind if kind else ''}: no transfer results")
            continue
        for setting, s_rows in t_rows.groupby("setting", sort=True):
            merged = s_rows.merge(p_rows, on="label", suffixes=("", "_p"))
            left = sorted(set(s_rows["label"]) ^ set(p_rows["label"]))
            panels.append((dataset, kind, setting, merged, left))
    if not panels:
        return _message_figure(
            out_dir,
            name,
            title,
            f"No dataset has both {prop} values and transfer results. " + " ".join(notes),
        )
    cols = min(len(panels), 3)
    n_rows = math.ceil(len(panels) / cols)
    fig = _figure(4.6 * cols, 3.6 * n_rows + 1.0)
    fig.suptitle(title)
    for i, (dataset, kind, setting, merged, left) in enumerate(panels):
        ax = fig.add_subplot(n_rows, cols, i + 1)
        x = merged["value_p"].to_numpy(dtype=float)
        y = merged["value"].to_numpy(dtype=float)
        sigma = ((merged["high"] - merged["low"]) / 2).to_numpy(dtype=float)
        for xi, yi, si, label in zip(x, y, sigma, merged["label"], strict=True):
            colour = _colour(table, label)
            ax.errorbar(xi, yi, yerr=None if math.isnan(si) else si, fmt="o", color=colour)
            ax.annotate(label, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        fit = fit_line(x, y, sigma)
        if not math.isnan(fit.r):
            xs = np.linspace(x.min(), x.max(), 20)
            ax.plot(xs, fit.slope * xs + fit.intercept, color="black", lw=1)
            kind_text = "WLS" if fit.weighted else "OLS (some points lack an interval)"
            stat = f"r={fit.r:.2f}, p={fit.p:.2g}, n={fit.n}, {kind_text}"
            if fit.weighted:
                stat += f", χ²/ν={fit.reduced_chi2:.2g}"
        else:
            stat = f"n={fit.n}: too few points (or no spread) for r and a line"
        ax.set_title(f"{dataset}{' ' + kind if kind else ''}: {setting}\n{stat}", fontsize=8)
        ax.set_xlabel(prop, fontsize=8)
        ax.set_ylabel(f"{setting} {merged['metric'].iloc[0] if len(merged) else ''}", fontsize=8)
        if left:
            notes.append(
                f"{dataset}{' ' + kind if kind else ''} / {setting}: left out "
                f"{', '.join(left)} (a value on only one axis)"
            )
    return _save(fig, out_dir, name, title, notes)


def all_figures(table: pd.DataFrame, out_dir: Path) -> list[FigureFile]:
    """Every figure of the table, written under ``out_dir``."""
    figures = [radar(table, out_dir), *dataset_bars(table, out_dir)]
    figures += [property_figure(table, prop, out_dir) for prop in PROPERTIES]
    return figures
