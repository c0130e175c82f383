"""The bodies of the command-line sub-commands (parsing lives in :mod:`medtransfer.cli`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from medtransfer.config import Roots
from medtransfer.textable import format_table

if TYPE_CHECKING:
    from medtransfer.jobs import DataOptions


def datasets_list(roots: Roots) -> int:
    from medtransfer.data.catalog import CATALOG

    rows = []
    for spec in CATALOG:
        present = "yes" if (roots.data / spec.folder).is_dir() else "no"
        aliases = ", ".join(spec.aliases[:3]) + (", ..." if len(spec.aliases) > 3 else "")
        patients = "yes" if spec.patients else "no: split by image"
        rows.append((spec.name, aliases, len(spec.class_names), spec.metric, patients, present))
    headers = ("name", "aliases", "classes", "metric", "patient ids", "found")
    print(format_table(headers, rows))
    print(f"\nfound: whether <data root>/<name> exists (data root: {roots.data}).")
    print("Patient ids: the default split policy keeps each patient's images on one side.")
    print(
        "Your own data: imagefolder:PATH (one folder per class) or "
        "csv:PATH (columns path,label[,patient]). Layouts: docs/datasets/."
    )
    return 0


def data_options(args: argparse.Namespace) -> DataOptions:
    """The data flags of a command as :class:`~medtransfer.jobs.DataOptions`."""
    from medtransfer.data.sources.base import LabelOptions
    from medtransfer.jobs import DataOptions

    return DataOptions(
        args.dataset,
        split_policy=args.split_policy,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction,
        labels=LabelOptions(uncertain=args.uncertain, pm_positive=args.pm_positive),
    )


def datasets_check(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.data.check import check_manifest
    from medtransfer.data.manifest import split_counts

    manifest = data_options(args).manifest(roots)
    print(f"{manifest.dataset}: {len(manifest)} images in {manifest.root}")
    print(f"split policy: {manifest.params['split_policy']}  manifest: {manifest.hash[:16]}")
    print(split_counts(manifest).to_string())
    problems = check_manifest(manifest, workers=args.workers, progress=not args.no_progress)
    if not problems:
        print("\nNo problems found.")
        return 0
    print(f"\n{len(problems)} problem(s):")
    for problem in problems:
        print(f"  {problem}")
    return 1


def datasets_prepare(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.data.catalog import dataset_key, resolve_dataset
    from medtransfer.data.prepare import prepare

    manifest = data_options(args).manifest(roots)
    key = dataset_key(resolve_dataset(args.dataset, roots.data, roots.cache).spec)
    folder, written = prepare(
        manifest, roots.cache, key, args.size, workers=args.workers, progress=not args.no_progress
    )
    print(f"{manifest.dataset}: {len(manifest)} images at {args.size}px in {folder}")
    print(f"{written} written now, {len(manifest) - written} already there.")
    return 0


def datasets_export(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.fsutil import atomic_write_text

    manifest = data_options(args).manifest(roots)
    atomic_write_text(args.out, manifest.table.to_csv(index=False))
    counts = manifest.table["split"].value_counts()
    summary = ", ".join(f"{split} {counts.get(split, 0)}" for split in ("train", "val", "test"))
    print(f"{manifest.dataset}: {len(manifest)} rows ({summary}) written to {args.out}")
    return 0


def datasets_download(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.data.catalog import downloaded_folder, get_dataset_spec
    from medtransfer.errors import DatasetError

    spec = get_dataset_spec(args.dataset)
    if spec.download is None:
        where = f" from {spec.source_url}" if spec.source_url else ""
        raise DatasetError(
            f"{spec.name} cannot be downloaded automatically (its publisher requires a login or "
            f"an agreement). Download it by hand{where} and place it in its published layout "
            f"under {roots.data / spec.folder} (see docs/datasets/{spec.name}.md)."
        )
    folder = spec.download(downloaded_folder(roots.cache, spec), not args.no_progress)
    print(
        f"{spec.name}: downloaded to {folder}; it is read from there while "
        f"{roots.data / spec.folder} does not exist."
    )
    return 0


def datasets_synth(args: argparse.Namespace) -> int:
    from medtransfer.data.synthetic import SynthOptions, synthesize

    root = synthesize(
        args.dataset,
        args.out,
        SynthOptions(per_class=args.per_class, size=args.size, seed=args.seed),
    )
    print(f"Wrote a synthetic tree in the published layout to {root}")
    print(f"Use it with: medtransfer --data-root {args.out} few-shot --dataset {args.dataset} ...")
    return 0


def models_list(roots: Roots) -> int:
    from medtransfer.models.catalog import list_models

    rows = [
        (spec.name, spec.arch, spec.method, spec.pretraining_data, spec.feature_dim)
        for spec in list_models()
    ]
    print(format_table(("name", "architecture", "method", "pretraining data", "dim"), rows))
    return 0


def few_shot(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.jobs import FewShotOptions, ModelOptions, RunOptions, run_few_shot

    result = run_few_shot(
        roots,
        data_options(args),
        ModelOptions(args.model, args.weights, args.model_seed, args.no_norm),
        FewShotOptions(
            n_way=args.n_way,
            n_support=args.n_support,
            n_query=args.n_query,
            iter_num=args.iter_num,
            image_size=args.image_size,
            resize=args.resize,
            pool=args.pool,
            seed=args.seed,
        ),
        RunOptions(
            args.device,
            args.workers,
            args.batch_size,
            progress=not args.no_progress,
            use_prepared=not args.no_prepared,
        ),
    )
    source = "extracted now" if result.extracted else "read from the feature store"
    print(f"features: {source}")
    print(result.summary.line())
    print(f"record: {result.record_path}")
    return 0
