"""What the jobs share once the options are read: the backbone on its device, the features
of every manifest row, and writing a record with its log."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medtransfer.compute import resolve_device, resolve_precision
from medtransfer.config import Roots
from medtransfer.data.manifest import Manifest
from medtransfer.data.prepare import prepared_pixels
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import FeatureSet, get_features
from medtransfer.jobs.base import JobResult
from medtransfer.jobs.options import JobData, ModelOptions, RunOptions
from medtransfer.models.backbone import Backbone
from medtransfer.results.records import Record, environment_info, write_record


@dataclass
class ModelJob:
    """A model on a dataset: the opened data, the backbone, the device, the timings, and
    the preset in force (``"none"`` or a name) with the settings it applied."""

    data: JobData
    backbone: Backbone
    device: str
    timings: dict[str, float]
    preset: str
    preset_settings: dict[str, Any]

    @property
    def manifest(self) -> Manifest:
        return self.data.manifest

    @property
    def metric(self) -> str:
        """The dataset's metric (``accuracy`` or ``mean per-class accuracy``)."""
        return self.data.spec.metric


@dataclass
class FeatureJob(ModelJob):
    """A :class:`ModelJob` with the features of every manifest row, computed in the
    effective ``precision``."""

    preprocessing: Preprocessing
    features: FeatureSet
    precision: str


def load_model(roots: Roots, data: JobData, model: ModelOptions, run: RunOptions) -> ModelJob:
    """Load the backbone and resolve the device; times the manifest and the loading."""
    start = time.perf_counter()
    backbone = model.load(roots, progress=run.progress)
    timings = {"manifest_s": data.seconds, "model_load_s": time.perf_counter() - start}
    return ModelJob(
        data,
        backbone,
        resolve_device(run.device),
        timings,
        run.preset,
        dict(run.preset_settings),
    )


def prepare_features(
    roots: Roots,
    data: JobData,
    model: ModelOptions,
    preprocessing: Preprocessing,
    run: RunOptions,
) -> FeatureJob:
    """Load the backbone and get (or extract) the features of every row of ``data``."""
    job = load_model(roots, data, model, run)
    precision = resolve_precision(run.precision, job.device)
    store_root = roots.cache / "features" / job.backbone.spec.name / data.key
    pixels = None
    if run.use_prepared:
        pixels = prepared_pixels(data.manifest, roots.cache, data.key, preprocessing.resize_side())
    features = get_features(
        job.backbone,
        data.manifest,
        preprocessing,
        store_root,
        weights_sha256=job.backbone.weights_sha256,
        normalization=job.backbone.normalization,
        arch=job.backbone.spec.arch,
        device=job.device,
        batch_size=run.batch_size,
        workers=run.workers,
        progress=run.progress,
        pixels=pixels,
        precision=precision,
    )
    job.timings["extraction_s"] = features.seconds
    return FeatureJob(
        **vars(job), preprocessing=preprocessing, features=features, precision=precision
    )


def model_params(backbone: Backbone, model: ModelOptions) -> dict[str, Any]:
    """The record parameters of the backbone's input handling and weights."""
    return {
        "normalization": backbone.normalization,
        "no_norm": model.no_norm,
        "norm": model.norm,
        "weights": str(model.weights) if model.weights else None,
        "model_seed": model.model_seed,
    }


@dataclass(frozen=True)
class Outcome:
    """A finished protocol run as its record holds it: the ``protocol``, the ``params`` and
    ``seed`` that define the run, its ``metrics``, the result ``lines`` for people, ``extra``
    record keys, ``log_only`` lines (the log holds them before ``lines``), and ``arrays``
    (name -> array) for the record's ``.npz`` sidecar: what a paired comparison of two
    records needs (per-episode accuracies, per-test-row scores with their row ids)."""

    protocol: str
    params: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    lines: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    log_only: list[str] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)


def write_job_record(
    roots: Roots,
    job: ModelJob,
    outcome: Outcome,
    *,
    extracted: bool | None = None,
    outputs: Callable[[Path], None] | None = None,
) -> JobResult:
    """Write the record of a finished job and its log; the job's result.

    The record's params gain ``preset`` (``"none"`` or the preset's name) and, under a
    preset, its extra keys gain ``preset_settings`` (the settings the preset applied; the
    params hold every value in force). ``outputs(folder)`` writes the run's files into the
    folder beside the record (:func:`~medtransfer.results.records.outputs_folder`)."""
    return write_outcome(
        roots,
        outcome,
        model=job.backbone.spec.name,
        dataset=job.manifest.dataset,
        weights_sha256=job.backbone.weights_sha256,
        manifest_hash=job.manifest.hash,
        timings=job.timings,
        device=job.device,
        preset=(job.preset, job.preset_settings),
        extracted=extracted,
        outputs=outputs,
    )


def write_outcome(
    roots: Roots,
    outcome: Outcome,
    *,
    model: str,
    dataset: str,
    weights_sha256: str,
    manifest_hash: str,
    timings: dict[str, float],
    device: str,
    preset: tuple[str, dict[str, Any]],
    extracted: bool | None = None,
    outputs: Callable[[Path], None] | None = None,
) -> JobResult:
    """:func:`write_job_record` for a job without a backbone of its own (a job over
    records or files): the record's identity given field by field; ``preset``: the preset's
    name and the settings it applied."""
    name, settings = preset
    params = {**outcome.params, "preset": name}
    extra = dict(outcome.extra)
    if name != "none":
        extra["preset_settings"] = _jsonable(settings)
    record = Record(
        protocol=outcome.protocol,
        model=model,
        dataset=dataset,
        params=params,
        seed=outcome.seed,
        metrics=outcome.metrics,
        weights_sha256=weights_sha256,
        manifest_hash=manifest_hash,
        timings=timings,
        environment=environment_info(device),
        extra=extra,
    )
    log = [f"INFO:root:{line}" for line in (*outcome.log_only, *outcome.lines)]
    path = write_record(roots.results, record, log, outcome.arrays, outputs=outputs)
    return JobResult(path, record.to_json(), outcome.metrics, list(outcome.lines), extracted)


def write_feature_record(
    roots: Roots, job: FeatureJob, model: ModelOptions, outcome: Outcome
) -> JobResult:
    """:func:`write_job_record` for a job over the feature store: the protocol's params
    gain the preprocessing, pixels, model and manifest parameters, the record says which
    features it read, and the log starts with the parameters and the features' origin."""
    params = {
        **outcome.params,
        "preprocessing": job.preprocessing.describe(),
        "pixels": job.features.pixels,
        "precision": job.precision,
        **model_params(job.backbone, model),
        **job.manifest.params,
    }
    source = "extracted" if job.features.computed else "read from the store"
    header = [
        f"Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})",
        f"dataset={job.manifest.dataset} model={job.backbone.spec.name} rows={len(job.manifest)}",
        f"features {source} ({job.features.path})",
    ]
    extra = {
        "feature_key": job.features.key,
        "features_extracted": job.features.computed,
        "class_names": list(job.manifest.class_names),
        **outcome.extra,
    }
    full = replace(outcome, params=params, extra=extra, log_only=[*header, *outcome.log_only])
    return write_job_record(roots, job, full, extracted=job.features.computed)


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    """Preset settings as JSON values (tuples as lists, paths as text)."""
    return {
        k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
        for k, v in settings.items()
    }
