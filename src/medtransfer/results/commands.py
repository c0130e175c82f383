"""The reading side's commands: ``results``, ``compare``, ``plot`` and ``report``.

Each is a :class:`Command`: an options dataclass declared with
:func:`~medtransfer.jobs.flags.option` (flags and defaults stated once) and
``run(roots, options) -> exit status``. They read records; ``compare`` also runs the
registered jobs for what is missing. Modules that need pandas, matplotlib or torch are
imported inside ``run`` (the command line starts without them).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.jobs.flags import add_flags, given_values, option
from medtransfer.jobs.options import DataOptions, RunOptions
from medtransfer.results.compare_options import CompareOptions

if TYPE_CHECKING:
    from medtransfer.results.collect import RecordFile, Skipped

FORMATS = ("markdown", "csv", "parquet")


@dataclass(frozen=True)
class Command:
    """A command over records: ``run(roots, options)``; ``doc``: help line, blank line,
    description; ``repeated``: fields whose flag may be given several times (each value
    may also be a comma list); ``forward``: options classes whose flags the command takes
    and hands on, as the values the user gave, in ``options.settings``."""

    name: str
    run: Callable[..., int]
    doc: str
    options: type
    repeated: tuple[str, ...] = ()
    forward: tuple[type, ...] = ()


def _repeated_flags(field: dataclasses.Field[Any]) -> tuple[str, ...]:
    return field.metadata.get("flags") or ("--" + field.name.replace("_", "-"),)


def add_command(parsers: argparse._SubParsersAction, command: Command) -> argparse.ArgumentParser:
    """The sub-command of ``command`` (its roots flags are added by the caller)."""
    from medtransfer.jobs.base import split_doc

    help_line, description = split_doc(command.doc)
    parser = parsers.add_parser(command.name, help=help_line, description=description or None)
    add_flags(parser, command.options, exclude=command.repeated)
    for field in dataclasses.fields(command.options):
        if field.name in command.repeated:
            required = field.default is dataclasses.MISSING and field.default_factory is (
                dataclasses.MISSING
            )
            parser.add_argument(
                *_repeated_flags(field),
                dest=field.name,
                action="append",
                required=required,
                default=argparse.SUPPRESS,
                help=field.metadata.get("help", "")
                + f" (repeat the flag, or a comma list{'' if required else '; default: none'})",
            )
    for forwarded in command.forward:
        add_flags(parser, forwarded)
    return parser


def build_options(command: Command, args: argparse.Namespace) -> Any:
    """The command's options from parsed arguments."""
    values = given_values(command.options, args)
    for name in command.repeated:
        if hasattr(args, name):
            values[name] = tuple(
                part.strip() for item in getattr(args, name) for part in item.split(",") if part
            )
    if command.forward:
        settings: dict[str, Any] = {}
        for forwarded in command.forward:
            settings.update(given_values(forwarded, args))
        values["settings"] = settings
    return command.options(**values)


def _read(roots: Roots, all_runs: bool) -> tuple[list[RecordFile], list[Skipped]]:
    """The records (newest per configuration unless ``all_runs``); skipped files reported."""
    from medtransfer.results.collect import newest_per_config, read_records

    records, skipped = read_records(roots.results)
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not readable records:", file=sys.stderr)
        for item in skipped:
            print(f"  {item.path}: {item.reason}", file=sys.stderr)
    if not records:
        print(f"no records under {roots.results}", file=sys.stderr)
    return (records if all_runs else newest_per_config(records)), skipped


def _filtered(records: list[RecordFile], where: str | None) -> tuple[list[RecordFile], Any]:
    """The records and their long table, filtered by ``--where`` (a record stays when any of
    its rows does)."""
    from medtransfer.results.table import filter_rows, long_table, parse_where

    table = filter_rows(long_table(records), parse_where(where))
    kept = set(table["record"])
    return [r for r in records if str(r.path) in kept], table


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ResultsOptions:
    """Flags of ``medtransfer results``."""

    all_runs: bool = option(
        False, "keep every run (default: the newest per config)", flags=("--all",)
    )
    fmt: str = option("markdown", "output format", flags=("--format",), choices=FORMATS)
    where: str | None = option(
        None, "filter rows, e.g. protocol=linear,dataset=chexpert (A|B for either)"
    )
    wide: bool = option(False, "pivot: model × (protocol, dataset) of each record's main metric")
    paper: bool = option(
        False, "the original's full_data.csv cells (fractions) beside the published values"
    )
    out: Path | None = option(None, "write to this file instead of printing")
    mlflow: str | None = option(
        None, "also log each record shown as an MLflow run at this tracking URI (a folder works)"
    )
    experiment: str = option("medtransfer", "MLflow experiment name for --mlflow")


def run_results(roots: Roots, options: ResultsOptions) -> int:
    """Print (or write) the results table; see :mod:`medtransfer.results.table`."""
    records, _ = _read(roots, options.all_runs)
    records, table = _filtered(records, options.where)
    if options.mlflow:
        from medtransfer.results.tracking import log_records

        logged, present = log_records(records, options.mlflow, experiment=options.experiment)
        print(
            f"mlflow: {logged} run(s) logged, {present} already there ({options.mlflow})",
            file=sys.stderr,
        )
    frame, index = _results_frame(table, records, options)
    from medtransfer.results.table import write_table

    text = write_table(
        frame, options.fmt, options.out, index=index, digits=4 if options.paper else 2
    )
    if text:
        print(text, end="")
    if options.out is not None:
        print(f"wrote {options.out}", file=sys.stderr)
    return 0


def _results_frame(
    table: Any, records: list[RecordFile], options: ResultsOptions
) -> tuple[Any, bool]:
    """The frame ``results`` prints and whether its index is a column."""
    if options.paper:
        from medtransfer.results.paper import paper_cells, paper_wide

        cells = paper_cells(table, {str(r.path): r.data for r in records})
        if not options.wide:
            return cells, False
        wide = paper_wide(cells)
        if options.fmt == "markdown":  # the columns we fill (csv/parquet: all 89)
            from medtransfer.results.paper import value_columns

            mine = [c for c in value_columns() if wide[c].notna().any()]
            print(
                f"{len(mine)} of {len(value_columns())} full_data.csv columns hold a cell of "
                "ours; --format csv writes all of them",
                file=sys.stderr,
            )
            suffixes = ("", " (published)", " (difference)")
            wide = wide[[f"{base}{s}" for base in mine for s in suffixes] + ["Model Type"]]
        return wide, True
    if options.wide:
        from medtransfer.results.table import wide_table

        pivot = wide_table(table)
        for conflict in pivot.conflicts:
            print(f"several runs in one cell (newest shown): {conflict}", file=sys.stderr)
        if options.fmt == "markdown":
            return _formatted_wide(pivot), True
        frame = pivot.values.copy()
        for column in pivot.values.columns:
            frame[f"{column} (low)"] = pivot.low[column]
            frame[f"{column} (high)"] = pivot.high[column]
        return frame[sorted(frame.columns)], True
    return table, False


def _formatted_wide(pivot: Any) -> Any:
    """The pivot's cells as ``value [low, high]`` text."""
    import math

    from medtransfer.results.table import number_text

    frame = pivot.values.copy().astype(object)
    for column in pivot.values.columns:
        for label in pivot.values.index:
            value = pivot.values.at[label, column]
            low, high = pivot.low.at[label, column], pivot.high.at[label, column]
            if isinstance(value, float) and math.isnan(value):
                frame.at[label, column] = ""
            elif math.isnan(low):
                frame.at[label, column] = number_text(value)
            else:
                shown = (number_text(v) for v in (value, low, high))
                frame.at[label, column] = "{} [{}, {}]".format(*shown)
    return frame


# ---------------------------------------------------------------------------- compare


def run_compare(roots: Roots, options: CompareOptions) -> int:
    """Run what is missing, rank the models and say which differences are real."""
    from medtransfer.results.comparing import compare_models

    print(compare_models(roots, options))
    return 0


# ---------------------------------------------------------------------------- plot


@dataclass(frozen=True)
class PlotOptions:
    """Flags of ``medtransfer plot``."""

    out: Path | None = option(None, "folder for the figures (default: <results>/figures)")
    published: bool = option(
        False, "draw the original study's published numbers instead of the records"
    )
    where: str | None = option(None, "filter the table first, e.g. dataset=shenzhencxr")
    all_runs: bool = option(
        False, "keep every run (default: the newest per config)", flags=("--all",)
    )


def run_plot(roots: Roots, options: PlotOptions) -> int:
    """Write every figure as PNG and SVG and print their paths and notes."""
    from medtransfer.results.plots import all_figures
    from medtransfer.results.table import filter_rows, parse_where

    if options.published:
        from medtransfer.results.paper import published_long

        table = filter_rows(published_long(), parse_where(options.where))
    else:
        records, _ = _read(roots, options.all_runs)
        _, table = _filtered(records, options.where)
    out = options.out or roots.results / "figures"
    for figure in all_figures(table, out):
        print(f"{figure.title}: {figure.png} {figure.svg}")
        for note in figure.notes:
            print(f"  note: {note}")
    return 0


# ---------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ReportOptions:
    """Flags of ``medtransfer report``."""

    out: Path | None = option(None, "the HTML file (default: <results>/report.html)")
    notes: tuple[str, ...] = option(
        (), "a warning to show first, e.g. 'synthetic data'", flags=("--note",)
    )
    where: str | None = option(None, "report only these rows, e.g. dataset=shenzhencxr")
    all_runs: bool = option(
        False, "keep every run (default: the newest per config)", flags=("--all",)
    )
    k: int = option(20, "kNN neighbours the kNN verdicts use")
    resamples: int = option(2000, "paired bootstrap resamples")
    alpha: float = option(0.05, "level of the paired tests after Holm's correction")


def run_report(roots: Roots, options: ReportOptions) -> int:
    """Write the self-contained HTML report and print its path."""
    path = write_report(roots, options)
    print(f"report: {path}")
    return 0


def write_report(roots: Roots, options: ReportOptions) -> Path:
    """Render the report of the records under ``roots.results`` to its file."""
    from medtransfer.results import report

    records, skipped = _read(roots, options.all_runs)
    records, _ = _filtered(records, options.where)
    return report.write_report(
        records,
        options.out or roots.results / "report.html",
        skipped=skipped,
        notes=options.notes,
        k=options.k,
        resamples=options.resamples,
        alpha=options.alpha,
    )


COMMANDS: tuple[Command, ...] = (
    Command(
        "results",
        run_results,
        """The results table from every record: long, wide, or the paper's cells.

        One row per (record, metric) with the model label, weights sha256, dataset,
        protocol, metric, value, interval, seeds, preset, policies, precision, config hash,
        time and versions; the newest record per configuration unless --all. Files under
        the results root that are not records are listed and skipped.""",
        ResultsOptions,
    ),
    Command(
        "compare",
        run_compare,
        """Compare models on one dataset, paired: which differences are real.

        Runs the protocols for every model (reusing matching records and the feature
        store), ranks the models with intervals, and compares every pair on the same
        episodes (few-shot) or test rows (linear, kNN), with Holm's correction for the
        number of comparisons.""",
        CompareOptions,
        repeated=("models",),
        forward=(DataOptions, RunOptions),
    ),
    Command(
        "plot",
        run_plot,
        """Figures from the results table (PNG and SVG).

        The few-shot radar per model, per-dataset bars with intervals, and transfer
        performance against attentive diffusion, invariance and perceptual distance with
        Pearson r, p and a weighted least-squares line.""",
        PlotOptions,
    ),
    Command(
        "report",
        run_report,
        """One self-contained HTML report of the records.

        What was run, rankings with intervals and paired verdicts, the published numbers
        beside ours, every figure inline, warnings where a number rests on little.""",
        ReportOptions,
        repeated=("notes",),
    ),
)


def get_command(name: str) -> Command:
    """The reading command called ``name``."""
    for command in COMMANDS:
        if command.name == name:
            return command
    raise KeyError(name)
