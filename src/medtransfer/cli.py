"""Command line: ``datasets``, ``models`` and ``features`` actions, one sub-command per
registered job (:mod:`medtransfer.jobs.registry`), sweeps, and the demo.

Every sub-command accepts the global root flags (before or after its name). Errors the
user can fix are printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtransfer import __version__
from medtransfer.config import Roots, resolve_roots
from medtransfer.errors import MedTransferError
from medtransfer.jobs.base import Job, split_doc
from medtransfer.jobs.flags import add_flags, with_default
from medtransfer.jobs.options import DataOptions, RunOptions
from medtransfer.jobs.registry import JOBS
from medtransfer.results.commands import COMMANDS, add_command


def _add_roots(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("roots")
    group.add_argument(
        "--data-root",
        default=default,
        help="folder holding the datasets, read only (env MEDTRANSFER_DATA; "
        "default ~/medtransfer-data)",
    )
    group.add_argument(
        "--cache-dir",
        default=default,
        help="downloads, weights, manifests, features; safe to delete (env MEDTRANSFER_CACHE; "
        "default: the user cache dir)",
    )
    group.add_argument(
        "--results-dir",
        default=default,
        help="records and logs (env MEDTRANSFER_RESULTS; default ~/medtransfer-results)",
    )


def _add_option(
    parser: argparse.ArgumentParser, *flags: str, default: Any, help: str, **kwargs: Any
) -> None:
    """A flag of a ``datasets``/``models`` action with its default stated in its help."""
    parser.add_argument(*flags, default=default, help=with_default(help, default), **kwargs)


def _add_dataset_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d", "--dataset", required=True, help="catalog name or alias (see `datasets list`)"
    )


def _add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_action(
    actions: argparse._SubParsersAction, name: str, doc: str
) -> argparse.ArgumentParser:
    """A ``datasets`` or ``models`` action; ``doc``: its help line, then (after a blank line)
    its description, as a job module's docstring (:func:`~medtransfer.jobs.base.split_doc`)."""
    help_line, description = split_doc(doc)
    return actions.add_parser(name, help=help_line, description=description or None)


def _add_job(commands: argparse._SubParsersAction, job: Job) -> None:
    """The sub-command of ``job``: the flags of each of its options classes, then the roots."""
    parser = commands.add_parser(job.name, help=job.help, description=job.description)
    for options in job.options:
        add_flags(parser, options)
    _add_roots(parser, top_level=False)


def _add_features(commands: argparse._SubParsersAction) -> None:
    """``features extract`` and ``features status``: the data, model, feature and compute
    flags of :mod:`medtransfer.jobs.features` (``--part`` for extract only)."""
    from medtransfer.jobs.features import OPTION_CLASSES

    features = commands.add_parser(
        "features", help="extract a feature store ahead of the protocols (in parts), its status"
    )
    actions = features.add_subparsers(dest="action", required=True, metavar="ACTION")
    extract = _add_action(
        actions,
        "extract",
        """Extract the features a protocol reads into the feature store (all, or part I/N).

        Runs the backbone over every image once and keeps the features in the cache, where
        `linear`, `knn` and `few-shot` (per --for) then read them without a forward pass.
        With --part I/N, only part I of N of the store's shards is extracted: start N of
        these (one per worker or array task); the last one to finish completes the store.
        Interrupted or killed extractions resume; processes that need the same store share
        the work (docs/features.md).""",
    )
    status = _add_action(
        actions,
        "status",
        """Say whether a feature store is complete, partial (which parts, rows done) or absent.

        Takes the same flags as `features extract` and prints the store's state and path;
        it runs no forward pass (the model is loaded for its weights' hash).""",
    )
    for parser, exclude in ((extract, ()), (status, ("part",))):
        for options in OPTION_CLASSES:
            add_flags(parser, options, exclude=exclude)
        _add_roots(parser, top_level=False)


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    """``sweep GRID.yaml`` and ``sweep status GRID.yaml`` (docs/sweeps.md)."""
    sweep = commands.add_parser(
        "sweep",
        help="run a grid of protocols x models x datasets x seeds from a YAML file, here or "
        "on Slurm; `sweep status GRID` shows where it stands",
        description="Validate the grid file (every problem listed with its line), then run "
        "the cells that have no record yet, cells that share features together (a large "
        "dataset's extraction first, split into parts where the grid sets "
        "`split_extraction`). Re-running the same command resumes; `medtransfer sweep status "
        "GRID.yaml` lists every cell (and extraction part) as done, running, failed or "
        "pending with its record. See docs/sweeps.md.",
    )
    sweep.add_argument("target", metavar="GRID.yaml|status", help="the grid file, or `status`")
    sweep.add_argument("grid", nargs="?", metavar="GRID.yaml", help="after `status`: the grid file")
    sweep.add_argument(
        "--executor",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: worker processes here; slurm: job arrays through submitit; "
        "submitit-local: submitit's local executor, to try a grid (default: local)",
    )
    sweep.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes, one GPU each when several are visible (default: 1)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and list the cells (and extraction parts) only",
    )
    sweep.add_argument("--rerun-failed", action="store_true", help="run failed cells again")
    sweep.add_argument(
        "--force", action="store_true", help="run every cell again, even those with a record"
    )
    sweep.add_argument(
        "--only",
        action="append",
        metavar="CELL",
        help="only the cell(s) whose key starts so, with the extraction parts they wait for, "
        "or one extraction part by its key (repeatable; --dry-run lists the keys; default: "
        "every cell)",
    )
    _add_roots(sweep, top_level=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Which pretrained backbone should I start from for medical imaging, and why?",
    )
    parser.add_argument("--version", action="version", version=f"medtransfer {__version__}")
    _add_roots(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    datasets = commands.add_parser(
        "datasets", help="list, check, synthesise, prepare, export and download datasets"
    )
    dataset_actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _add_action(dataset_actions, "list", "the dataset catalog")
    _add_roots(listing, top_level=False)
    check = _add_action(
        dataset_actions, "check", "counts per class and split, and every problem with its file"
    )
    add_flags(check, DataOptions)
    _add_option(check, "--workers", type=int, default=4, help="threads opening images")
    _add_no_progress(check)
    _add_roots(check, top_level=False)
    synth = _add_action(
        dataset_actions, "synth", "write a small synthetic tree in the dataset's published layout"
    )
    _add_dataset_name(synth)
    synth.add_argument("--out", type=Path, required=True, help="folder to write DATASET/ into")
    _add_option(synth, "--per-class", type=int, default=40, help="images per class")
    _add_option(synth, "--size", type=int, default=128, help="image side in pixels")
    _add_option(synth, "--seed", type=int, default=0, help="seed of the drawn pictures")
    _add_roots(synth, top_level=False)
    prepare = _add_action(
        dataset_actions,
        "prepare",
        """Write pre-resized copies into the cache (decode large images once).

        Decode every image once and keep a copy whose shorter side is --size pixels
        (lossless PNG) in the cache. Feature extraction then reads the copy whenever its size
        covers the resize it needs, and the run says so (`--no-prepared` turns this off);
        fine-tuning reads it only when it is large enough for its random crops (915 px for
        224-px crops). The data root is never written to.""",
    )
    add_flags(prepare, DataOptions)
    _add_option(prepare, "--size", type=int, default=256, help="shorter side in pixels")
    _add_option(prepare, "--workers", type=int, default=4, help="decoding threads")
    _add_no_progress(prepare)
    _add_roots(prepare, top_level=False)
    export = _add_action(
        dataset_actions,
        "export",
        """Write the manifest (split and labels) as CSV.

        Write the manifest as CSV with columns path (relative to the CSV's folder), label
        (class index), class_name, patient, split (train/val/test), so a split can be
        shared, inspected, edited and reused: `--dataset csv:FILE` reads it back with the
        same classes and splits.""",
    )
    add_flags(export, DataOptions)
    export.add_argument("--out", type=Path, required=True, help="CSV file to write")
    _add_roots(export, top_level=False)
    download = _add_action(
        dataset_actions,
        "download",
        """Download a dataset that needs no login (CIFAR-10/100) into the cache.

        Fetch the dataset's archive through medtransfer's downloader (resumed,
        checksummed), unpack it safely into <cache>/datasets/<folder>, and read it from
        there whenever <data root>/<folder> does not exist. Datasets behind a registration
        page must be downloaded by hand; the error says from where.""",
    )
    _add_dataset_name(download)
    _add_no_progress(download)
    _add_roots(download, top_level=False)

    models = commands.add_parser("models", help="the model catalog: list, info, download, convert")
    model_actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    model_list = _add_action(model_actions, "list", "every catalog model")
    _add_roots(model_list, top_level=False)
    info = _add_action(model_actions, "info", "everything the catalog knows about a model")
    info.add_argument("name", help="a catalog model or alias (see `models list`)")
    _add_roots(info, top_level=False)
    fetch = _add_action(
        model_actions,
        "download",
        """Download (and convert) weights into the cache.

        Fetch the authors' weights file (resumed, sha256 recorded), convert it to a
        torchvision state dict once, and cache it. Models behind a login say how to get the
        file by hand.""",
    )
    which = fetch.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="a catalog model")
    which.add_argument("--all", action="store_true", help="every downloadable model")
    _add_no_progress(fetch)
    _add_roots(fetch, top_level=False)
    convert = _add_action(
        model_actions,
        "convert",
        """Convert a weights file you obtained by hand (e.g. SimCLR-v1's zip).

        Convert the authors' file for a catalog model into the cache, as `models download`
        would have; later runs use it.""",
    )
    convert.add_argument("name", help="a catalog model, e.g. simclr-v1")
    convert.add_argument(
        "--from", dest="source", type=Path, required=True, help="the file as its authors publish it"
    )
    _add_roots(convert, top_level=False)

    _add_features(commands)

    for job in JOBS:
        _add_job(commands, job)
    for command in COMMANDS:  # results, compare, plot, report
        _add_roots(add_command(commands, command), top_level=False)

    _add_sweep(commands)

    demo = commands.add_parser(
        "demo",
        help="an offline tour: one architecture, ImageNet-pretrained vs random init, on real "
        "medical pixels",
        description="Few-shot on two small offline sets (real medical patches, a synthetic "
        "Shenzhen-layout tree): EfficientNet-Lite0 with its ImageNet weights against the same "
        "network randomly initialised, plus a random ResNet-18 row. About a minute on 2 CPU "
        "cores the first time (docs/benchmarks.md), seconds once the features are cached.",
    )
    demo.add_argument(
        "--quick", action="store_true", help="fewer images (20 a class), episodes and pixels"
    )
    add_flags(demo, RunOptions, exclude=("preset",))
    _add_roots(demo, top_level=False)
    return parser


def _roots(args: argparse.Namespace) -> Roots:
    return resolve_roots(args.data_root, args.cache_dir, args.results_dir)


def _cmd_action(args: argparse.Namespace) -> int:
    """``datasets``, ``models`` and ``features`` actions: ``commands.<command>_<action>``."""
    from medtransfer import commands

    action = getattr(commands, f"{args.command}_{args.action}")
    if args.action == "synth":  # writes where --out says; needs no roots
        return action(args)
    return action(_roots(args), args)


def _cmd_job(args: argparse.Namespace) -> int:
    from medtransfer.commands import run_job

    return run_job(_roots(args), args.command, args)


def _cmd_read(args: argparse.Namespace) -> int:
    from medtransfer.results.commands import build_options, get_command

    command = get_command(args.command)
    return command.run(_roots(args), build_options(command, args))


def _cmd_sweep(args: argparse.Namespace) -> int:
    from medtransfer.sweep.command import sweep_command

    return sweep_command(_roots(args), args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from medtransfer.demo import run_demo

    return run_demo(_roots(args), args)


HANDLERS = {
    "datasets": _cmd_action,
    "models": _cmd_action,
    "features": _cmd_action,
    **{job.name: _cmd_job for job in JOBS},
    **{command.name: _cmd_read for command in COMMANDS},
    "sweep": _cmd_sweep,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except MedTransferError as exc:
        print(f"medtransfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "medtransfer: interrupted; finished work is kept and a re-run resumes.", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
