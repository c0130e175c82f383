"""What every job shares: data, model and run options, features, and writing records."""

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
from medtransfer.models.backbone import Backbone
from medtransfer.models.loader import load_backbone
from medtransfer.results.records import Record, environment_info, write_record


@dataclass(frozen=True)
class DataOptions:
    """Which data, under which policies."""

    dataset: str
    split_policy: str = "patient"
    split_seed: int = 0
    val_fraction: float = 0.2
    labels: LabelOptions = field(default_factory=LabelOptions)
    val_seed: int | None = None

    def manifest(self, roots: Roots) -> Manifest:
        """Build this data's manifest (and keep a copy in the cache)."""
        return load_manifest(
            resolve_dataset(self.dataset, roots.data, roots.cache),
            roots.cache,
            split_policy=self.split_policy,
            seed=self.split_seed,
            val_fraction=self.val_fraction,
            labels=self.labels,
            val_seed=self.val_seed,
        )


@dataclass(frozen=True)
class ModelOptions:
    """Which backbone, with which weights and input handling."""

    model: str
    weights: Path | None = None
    model_seed: int = 0
    no_norm: bool = False
    norm: str | None = None

    def load(self, roots: Roots, *, progress: bool = True) -> Backbone:
        """A fresh backbone with these options (eval mode)."""
        return load_backbone(
            self.model,
            roots,
            weights=self.weights,
            seed=self.model_seed,
            no_norm=self.no_norm,
            progress=progress,
            norm=self.norm,
        )


@dataclass(frozen=True)
class RunOptions:
    """Where and how to compute."""

    device: str = "auto"
    workers: int = 0
    batch_size: int = 64
    progress: bool = True
    use_prepared: bool = True


@dataclass
class FeatureJob:
    """A manifest, a backbone and the features of every manifest row."""

    manifest: Manifest
    backbone: Backbone
    preprocessing: Preprocessing
    features: FeatureSet
    device: str
    metric: str
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
    backbone = model.load(roots, progress=run.progress)
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
    return FeatureJob(
        manifest, backbone, preprocessing, features, device, resolved.spec.metric, timings
    )


def feature_params(job: FeatureJob, model: ModelOptions) -> dict[str, Any]:
    """The parameters every feature-based record carries (preprocessing, weights, policies)."""
    return {
        "preprocessing": job.preprocessing.describe(),
        "pixels": job.features.pixels,
        "normalization": job.backbone.normalization,
        "no_norm": model.no_norm,
        "norm": model.norm or "default",
        "weights": str(model.weights) if model.weights else None,
        "model_seed": model.model_seed,
        **job.manifest.params,
    }


def write_job_record(
    roots: Roots,
    job: FeatureJob,
    *,
    protocol: str,
    params: dict[str, Any],
    seed: int,
    metrics: dict[str, Any],
    extra: dict[str, Any],
    result_lines: list[str],
) -> tuple[Path, dict[str, Any]]:
    """Write the record and log of a finished job; returns (record path, record)."""
    record = Record(
        protocol=protocol,
        model=job.backbone.spec.name,
        dataset=job.manifest.dataset,
        params=params,
        seed=seed,
        metrics=metrics,
        weights_sha256=job.backbone.weights_sha256,
        manifest_hash=job.manifest.hash,
        timings=job.timings,
        environment=environment_info(job.device),
        extra={
            "feature_key": job.features.key,
            "features_extracted": job.features.computed,
            "class_names": list(job.manifest.class_names),
            **extra,
        },
    )
    source = "extracted" if job.features.computed else "read from the store"
    log = [
        f"INFO:root:Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})",
        f"INFO:root:dataset={record.dataset} model={record.model} rows={len(job.manifest)}",
        f"INFO:root:features {source} ({job.features.path})",
        *(f"INFO:root:{line}" for line in result_lines),
    ]
    return write_record(roots.results, record, log), record.to_json()
