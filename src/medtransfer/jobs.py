"""Jobs: the wiring from names to a finished record (manifest, backbone, store, protocol).

The command line, the demo and the benchmarks call these; the protocols themselves stay
pure functions over arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.config import Roots, resolve_device
from medtransfer.data.catalog import dataset_key, resolve_dataset
from medtransfer.data.manifest import Manifest, load_manifest
from medtransfer.data.prepare import prepared_pixels
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import FeatureSet, get_features
from medtransfer.models.backbone import Backbone, load_backbone
from medtransfer.protocols.fewshot import (
    FewShotSummary,
    episode_accuracies,
    sample_episodes,
    summarize,
)
from medtransfer.results.records import Record, environment_info, write_record


@dataclass(frozen=True)
class DataOptions:
    """Which data, under which policies."""

    dataset: str
    split_policy: str = "patient"
    split_seed: int = 0
    val_fraction: float = 0.2
    labels: LabelOptions = field(default_factory=LabelOptions)

    def manifest(self, roots: Roots) -> Manifest:
        """Build this data's manifest (and keep a copy in the cache)."""
        return load_manifest(
            resolve_dataset(self.dataset, roots.data, roots.cache),
            roots.cache,
            split_policy=self.split_policy,
            seed=self.split_seed,
            val_fraction=self.val_fraction,
            labels=self.labels,
        )


@dataclass(frozen=True)
class ModelOptions:
    """Which backbone, with which weights and input handling."""

    model: str
    weights: Path | None = None
    model_seed: int = 0
    no_norm: bool = False
    norm: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """Where and how to compute."""

    device: str = "auto"
    workers: int = 0
    batch_size: int = 64
    progress: bool = True
    use_prepared: bool = True


@dataclass(frozen=True)
class FewShotOptions:
    """The original's few-shot flags (spec/evaluations.md §1.1) plus the episode pool."""

    n_way: int = 5
    n_support: int = 5
    n_query: int = 15
    iter_num: int = 600
    image_size: int = 224
    resize: str | None = None  # None: the original's geometry for the dataset
    pool: str = "all"
    seed: int = 0


@dataclass
class FeatureJob:
    """A manifest, a backbone and the features of every manifest row."""

    manifest: Manifest
    backbone: Backbone
    preprocessing: Preprocessing
    features: FeatureSet
    device: str
    timings: dict[str, float] = field(default_factory=dict)


def prepare_features(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    preprocessing: Preprocessing,
    run: RunOptions,
) -> FeatureJob:
    """Build the manifest, load the backbone and get (or extract) the features."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    resolved = resolve_dataset(data.dataset, roots.data, roots.cache)
    manifest = data.manifest(roots)
    timings["manifest_s"] = time.perf_counter() - start
    start = time.perf_counter()
    backbone = load_backbone(
        model.model,
        roots,
        weights=model.weights,
        seed=model.model_seed,
        no_norm=model.no_norm,
        progress=run.progress,
        norm=model.norm,
    )
    timings["model_load_s"] = time.perf_counter() - start
    device = resolve_device(run.device)
    key = dataset_key(resolved.spec)
    store_root = roots.cache / "features" / backbone.spec.name / key
    pixels = None
    if run.use_prepared:
        pixels = prepared_pixels(manifest, roots.cache, key, preprocessing.resize_side())
    features = get_features(
        backbone,
        manifest,
        preprocessing,
        store_root,
        weights_sha256=backbone.weights_sha256,
        normalization=backbone.normalization,
        arch=backbone.spec.arch,
        device=device,
        batch_size=run.batch_size,
        workers=run.workers,
        progress=run.progress,
        pixels=pixels,
    )
    timings["extraction_s"] = features.seconds
    return FeatureJob(manifest, backbone, preprocessing, features, device, timings)


@dataclass(frozen=True)
class FewShotResult:
    """A finished few-shot run."""

    summary: FewShotSummary
    record_path: Path
    record: dict[str, Any]
    extracted: bool


def run_few_shot(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: FewShotOptions,
    run: RunOptions,
) -> FewShotResult:
    """Prototypical-network few-shot evaluation; writes and returns its record."""
    resolved = resolve_dataset(data.dataset, roots.data, roots.cache)
    resize = options.resize or resolved.spec.few_shot_resize
    preprocessing = Preprocessing(image_size=options.image_size, resize=resize)
    job = prepare_features(roots, data, model, preprocessing, run)
    start = time.perf_counter()
    rows = job.manifest.select(options.pool)
    labels = job.features.labels[rows]
    episodes = sample_episodes(
        labels,
        n_way=options.n_way,
        n_support=options.n_support,
        n_query=options.n_query,
        n_episodes=options.iter_num,
        seed=options.seed,
        class_names=job.manifest.class_names,
    )
    accuracies = episode_accuracies(job.features.features[rows], episodes, device=job.device)
    summary = summarize(accuracies)
    job.timings["episodes_s"] = time.perf_counter() - start
    params: dict[str, Any] = {
        "n_way": options.n_way,
        "n_support": options.n_support,
        "n_query": options.n_query,
        "iter_num": options.iter_num,
        "pool": options.pool,
        "preprocessing": preprocessing.describe(),
        "pixels": job.features.pixels,
        "normalization": job.backbone.normalization,
        "no_norm": model.no_norm,
        "norm": model.norm or "default",
        "weights": str(model.weights) if model.weights else None,
        "model_seed": model.model_seed,
        **job.manifest.params,
    }
    record = Record(
        protocol="few-shot",
        model=job.backbone.spec.name,
        dataset=job.manifest.dataset,
        params=params,
        seed=options.seed,
        metrics={
            "accuracy": summary.accuracy,
            "accuracy_ci95": summary.ci95,
            "accuracy_std": summary.std,
            "episodes": summary.episodes,
        },
        weights_sha256=job.backbone.weights_sha256,
        manifest_hash=job.manifest.hash,
        timings=job.timings,
        environment=environment_info(job.device),
        extra={
            "feature_key": job.features.key,
            "features_extracted": job.features.computed,
            "class_names": list(job.manifest.class_names),
        },
    )
    log = [
        f"INFO:root:Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})",
        f"INFO:root:dataset={record.dataset} model={record.model} "
        f"rows={len(rows)} classes={len(set(labels.tolist()))}",
        f"INFO:root:features {'extracted' if job.features.computed else 'read from the store'} "
        f"({job.features.path})",
        f"INFO:root:{summary.line()}",
    ]
    path = write_record(roots.results, record, log)
    return FewShotResult(summary, path, record.to_json(), job.features.computed)
