"""The bodies of the command-line sub-commands (parsing lives in :mod:`medtransfer.cli`):
the ``datasets``, ``models`` and ``features`` actions, and :func:`run_job` for every
registered job."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medtransfer.config import Roots
from medtransfer.textable import format_table

if TYPE_CHECKING:
    from medtransfer.jobs.base import JobResult
    from medtransfer.jobs.common import StoreRequest
    from medtransfer.jobs.features import FeatureOptions
    from medtransfer.jobs.options import JobData


def datasets_list(roots: Roots, args: argparse.Namespace | None = None) -> int:
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


def _open_data(
    roots: Roots, args: argparse.Namespace, *, keep_empty_classes: bool = False
) -> JobData:
    """The dataset and manifest the data flags of ``args`` name."""
    from medtransfer.jobs.flags import from_args
    from medtransfer.jobs.options import DataOptions

    return from_args(DataOptions, args).open(roots, keep_empty_classes=keep_empty_classes)


def datasets_check(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.data.check import check_manifest
    from medtransfer.data.manifest import split_counts
    from medtransfer.jobs.policies import label_policy, orientation_policy

    data = _open_data(roots, args, keep_empty_classes=True)
    manifest = data.manifest
    print(f"{manifest.dataset}: {len(manifest)} images in {manifest.root}")
    print(f"split policy: {manifest.params['split_policy']}  manifest: {manifest.hash[:16]}")
    labels = label_policy(data.spec, manifest.params.get("label_policy") or {})
    if labels:
        print(f"labels: {labels}")
    if "orientation" in manifest.params:
        print(f"slices: {orientation_policy(manifest.params['orientation'])}")
    for line in _source_notes(manifest.params):
        print(line)
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
    from medtransfer.data.prepare import prepare

    data = _open_data(roots, args)
    manifest = data.manifest
    folder, written = prepare(
        manifest,
        roots.cache,
        data.key,
        args.size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"{manifest.dataset}: {len(manifest)} images at {args.size}px in {folder}")
    print(f"{written} written now, {len(manifest) - written} already there.")
    return 0


def _source_notes(params: dict[str, object]) -> list[str]:
    """What the data itself decided (a ``csv:`` file's class_name and split columns)."""
    lines = []
    if "class_names_from" in params:
        lines.append(f"class names: from {params['class_names_from']}")
    if "split_from" in params:
        lines.append(f"split: as given by {params['split_from']} (--split-policy not applied)")
    if params.get("dropped_classes"):
        lines.append(f"left out (no image): {', '.join(map(str, params['dropped_classes']))}")
    return lines


def datasets_export(roots: Roots, args: argparse.Namespace) -> int:
    import os

    from medtransfer.data.images import load_image
    from medtransfer.fsutil import atomic_write_text

    data = _open_data(roots, args)
    manifest = data.manifest
    out = args.out.expanduser().resolve()
    table = manifest.table.copy()
    # relative to the CSV's own folder, which is how `csv:FILE` reads paths back
    table["path"] = [os.path.relpath(manifest.root / p, out.parent) for p in table["path"]]
    atomic_write_text(out, table.to_csv(index=False))
    counts = table["split"].value_counts()
    summary = ", ".join(f"{split} {counts.get(split, 0)}" for split in ("train", "val", "test"))
    print(f"{manifest.dataset}: {len(manifest)} rows ({summary}) written to {out}")
    print(
        "Paths are relative to the CSV's folder. Read it back with --dataset csv:"
        f"{out}: its class_name and split columns are kept."
    )
    if data.spec.load is not load_image:
        print(
            f"Note: {manifest.dataset}'s items need its own reader ({data.spec.load.__name__}), "
            "so the CSV records the split; `csv:` cannot decode them."
        )
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
    from medtransfer.data.synth.primitives import SynthOptions
    from medtransfer.data.synth.writers import synthesize

    root = synthesize(
        args.dataset,
        args.out,
        SynthOptions(per_class=args.per_class, size=args.size, seed=args.seed),
    )
    print(f"Wrote a synthetic tree in the published layout to {root}")
    print(f"Use it with: medtransfer --data-root {args.out} few-shot --dataset {args.dataset} ...")
    return 0


def models_list(roots: Roots, args: argparse.Namespace | None = None) -> int:
    from medtransfer.models.catalog import list_models
    from medtransfer.models.weights import weight_source

    rows = [
        (
            spec.name,
            spec.arch,
            spec.method,
            spec.pretraining_data,
            spec.feature_dim,
            weight_source(spec, roots).status(),
        )
        for spec in list_models()
    ]
    headers = ("name", "architecture", "method", "pretraining data", "dim", "weights")
    print(format_table(headers, rows))
    print(
        "\nAlso: timm:NAME and torchvision:NAME for other architectures; `models info NAME` "
        "for details; `models download --all` to fetch everything downloadable."
    )
    return 0


def models_info(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.models.archs import ARCHS
    from medtransfer.models.catalog import get_model_spec
    from medtransfer.models.converted import converted_provenance
    from medtransfer.models.weights import weight_source

    spec = get_model_spec(args.name)
    arch = ARCHS.get(spec.arch)
    fields = [
        ("name", spec.name),
        ("aliases", ", ".join(spec.aliases) or "-"),
        ("description", spec.description),
        ("architecture", spec.arch),
        ("feature dim", spec.feature_dim),
        ("named layers", ", ".join(arch.layers) if arch else "-"),
        ("method", spec.method),
        ("pretraining data", spec.pretraining_data),
        ("input normalisation", spec.normalization),
        ("the study fed it", spec.study_normalization or spec.normalization),
        ("licence", spec.licence),
        ("weights", weight_source(spec, roots).status()),
    ]
    if spec.url:
        fields.append(("upstream file", spec.url))
    if spec.converter:
        fields.append(("converter", spec.converter))
    if spec.manual:
        fields.append(("by hand", spec.manual))
    provenance = converted_provenance(roots, spec) if spec.converter else None
    if provenance:
        fields.append(("upstream sha256", provenance["upstream_sha256"]))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.ljust(width)}  {value}")
    return 0


def models_download(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.errors import MedTransferError
    from medtransfer.models.catalog import get_model_spec, list_models
    from medtransfer.models.weights import weight_source

    specs = list_models() if args.all else [get_model_spec(args.name)]
    failed = 0
    for spec in specs:
        source = weight_source(spec, roots)
        if not source.downloads:
            print(f"{spec.name}: nothing to download ({spec.source}).")
            continue
        if args.all and spec.manual:
            print(f"{spec.name}: skipped — {spec.manual}.")
            continue
        try:
            path, digest = source.download(progress=not args.no_progress)
        except MedTransferError as exc:
            if not args.all:
                raise
            failed += 1
            print(f"{spec.name}: FAILED — {exc}")
            continue
        print(f"{spec.name}: {path} (sha256 {digest[:16]}…)")
    return 1 if failed else 0


def models_convert(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.models.catalog import get_model_spec
    from medtransfer.models.converted import convert_file

    spec = get_model_spec(args.name)
    path, digest = convert_file(spec, roots, args.source)
    print(f"{spec.name}: converted {args.source} (sha256 {digest[:16]}…) to {path}")
    return 0


def _print_result(result: JobResult) -> None:
    """A finished job as people read it: where the features came from, the policies in
    force, the result lines, the record."""
    if result.extracted is not None:
        source = "extracted now" if result.extracted else "read from the feature store"
        reused = result.record.get("features_rows_reused") or 0
        if result.extracted and reused:
            source += f" ({reused:,} rows reused from an earlier, unfinished extraction)"
        print(f"features: {source}")
    for line in (*result.notes, *result.lines):
        print(line)
    print(f"record: {result.record_path}")


def run_job(roots: Roots, name: str, args: argparse.Namespace) -> int:
    """Run the registered job ``name`` with the options in ``args``; print its result.

    Several models (``-m a -m b`` or ``-m a,b``) run one after the other on the dataset
    resolved once (:func:`medtransfer.jobs.multi.run_models`), each printed as it ends, then
    one table; the exit status is 2 if any model failed."""
    from medtransfer.jobs.flags import given_values
    from medtransfer.jobs.multi import ModelRun, run_models, split_models, summary_table
    from medtransfer.jobs.options import ModelOptions
    from medtransfer.jobs.registry import get_job

    job = get_job(name)
    given = {k: v for options in job.options for k, v in given_values(options, args).items()}
    preset = given.pop("preset", "none")
    if ModelOptions not in job.options:  # a job without a model (perceptual distance)
        _print_result(job.run(roots, *job.resolve(given, preset)))
        return 0
    models = split_models(given.pop("model"))
    if len(models) == 1:
        _print_result(job.run(roots, *job.resolve({**given, "model": models[0]}, preset)))
        return 0

    def show(run: ModelRun) -> None:
        print(f"== {run.model} ==")
        if run.result is None:
            print(f"medtransfer: error: {run.error}")
        else:
            _print_result(run.result)
        print()

    runs = run_models(job, roots, given, models, preset, on_result=show)
    print(summary_table(runs))
    return 2 if any(run.result is None for run in runs) else 0


def _feature_request(roots: Roots, args: argparse.Namespace) -> FeatureAction:
    """What a ``features`` action asks for: its options (over the ``--for`` protocol's
    preset when one is given), the opened data and the preprocessing."""
    from medtransfer.jobs.common import StoreRequest
    from medtransfer.jobs.features import OPTION_CLASSES, protocol_preprocessing, resolve_options
    from medtransfer.jobs.flags import given_values

    given = {k: v for options in OPTION_CLASSES for k, v in given_values(options, args).items()}
    preset = given.pop("preset", "none")
    data, model, features, run = resolve_options(given, preset)
    opened = data.open(roots)
    preprocessing = protocol_preprocessing(
        features.for_protocol, opened.spec, features.image_size, features.resize
    )
    store = StoreRequest(features.for_protocol, opened, model, preprocessing, run)
    return FeatureAction(store, features)


@dataclass(frozen=True)
class FeatureAction:
    """A ``features`` action: the ``store`` it names (that of the ``--for`` protocol) and
    its own options."""

    store: StoreRequest
    features: FeatureOptions

    def heading(self) -> str:
        store = self.store
        manifest, described = store.data.manifest, store.preprocessing.describe()
        return (
            f"features for {store.protocol}: {manifest.dataset} ({len(manifest):,} images) x "
            f"{store.model.model}, {described['image_size']} px {described['resize']}"
        )


def features_extract(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.jobs.common import extract_feature_part, prepare_features

    action = _feature_request(roots, args)
    print(action.heading())
    part = action.features.part
    if part is None:
        job = prepare_features(roots, action.store)
        found = job.features
        if found.computed:
            print(
                f"extracted now: {found.rows_computed:,} rows in {found.seconds:.1f} s "
                f"({found.rows_reused:,} reused from an earlier, unfinished extraction), "
                f"precision {job.precision}"
            )
        else:
            print("already in the feature store: nothing to extract")
        n_rows, dim = found.features.shape
        print(f"store: complete: {n_rows:,} rows x {dim} features in {found.path}")
        return 0
    result = extract_feature_part(roots, action.store, part)
    print("\n".join(result.lines()))
    if not result.merged and not result.complete:
        print(
            "The store is completed by whichever part finishes last (or by `features "
            "extract` without --part); protocols extract what is missing themselves."
        )
    return 0


def features_status(roots: Roots, args: argparse.Namespace) -> int:
    from medtransfer.jobs.common import feature_store_status

    action = _feature_request(roots, args)
    print(action.heading())
    status = feature_store_status(roots, action.store)
    print(f"key: {status.key}")
    print("\n".join(status.lines()))
    return 0
