"""What the jobs share once the options are read: the backbone on its device, the features
of every manifest row, and writing a record with its log."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.compute import resolve_device, resolve_precision
from medtransfer.config import Roots
from medtransfer.data.manifest import Manifest
from medtransfer.data.prepare import prepared_pixels
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import FeatureSet, get_features
from medtransfer.jobs import policies
from medtransfer.jobs.base import Headline, JobResult
from medtransfer.jobs.options import DataOptions, JobData, ModelOptions, RunOptions
from medtransfer.models.backbone import Backbone
from medtransfer.results.records import Record, environment_info, run_label, write_record


def model_label(model: ModelOptions) -> str:
    """The label the run of ``model`` is filed under (:func:`run_label`), checked before any
    work: a label naming a catalog model is only that model's own."""
    from medtransfer.models.catalog import get_model_spec, list_models
    from medtransfer.models.external import is_external

    name = model.model if is_external(model.model) else get_model_spec(model.model).name
    reserved = [alias for spec in list_models() for alias in (spec.name, *spec.aliases)]
    return run_label(name, model.label, model.weights, reserved)


def open_job_data(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    protocol: str,
    *,
    val_seed: int | None = None,
) -> JobData:
    """The dataset of a run of ``protocol``, opened once, after the run's label is checked
    (a bad ``--label`` fails before any data is read), with ``--uncertain original``
    resolved for ``protocol``."""
    model_label(model)
    return data.for_protocol(protocol).open(roots, val_seed=val_seed)


if TYPE_CHECKING:
    from medtransfer.features.layout import Part
    from medtransfer.features.store import PartResult, StoreStatus


@dataclass
class ModelJob:
    """A model on a dataset: the opened data, the backbone, the device, the timings, the
    preset in force (``"none"`` or a name) with the settings it applied, the run's
    ``label`` and, for a ``--weights`` file, its absolute path and sha256."""

    data: JobData
    backbone: Backbone
    device: str
    timings: dict[str, float]
    preset: str
    preset_settings: dict[str, Any]
    label: str
    weights_file: dict[str, str] | None

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


def load_model(
    roots: Roots, data: JobData, model: ModelOptions, run: RunOptions, *, protocol: str
) -> ModelJob:
    """Load the backbone (``--norm original`` resolved for ``protocol``) and resolve the
    device; times the manifest and the loading."""
    label = model_label(model)
    device = resolve_device(run.device)
    start = time.perf_counter()
    backbone = model.load(roots, progress=run.progress, protocol=protocol)
    timings = {"manifest_s": data.seconds, "model_load_s": time.perf_counter() - start}
    weights_file = None
    if model.weights is not None:
        path = Path(model.weights).expanduser().resolve()
        weights_file = {"path": str(path), "sha256": backbone.weights_sha256}
    return ModelJob(
        data,
        backbone,
        device,
        timings,
        run.preset,
        dict(run.preset_settings),
        label,
        weights_file,
    )


def _store_arguments(
    roots: Roots, job: ModelJob, request: StoreRequest
) -> tuple[str, dict[str, Any]]:
    """(effective precision, the feature store's arguments after the backbone, manifest and
    preprocessing) for ``job`` loaded for ``request``: one place decides the store folder,
    the pixels and the key's ingredients, so a protocol run and ``features extract`` name
    the same store."""
    data, run, preprocessing = job.data, request.run, request.preprocessing
    precision = resolve_precision(run.precision, job.device)
    pixels = None
    if run.use_prepared:
        pixels = prepared_pixels(data.manifest, roots.cache, data.key, preprocessing.resize_side())
    arguments = {
        "store_root": roots.cache / "features" / job.backbone.spec.name / data.key,
        "weights_sha256": job.backbone.weights_sha256,
        "normalization": job.backbone.normalization,
        "arch": job.backbone.spec.arch,
        "device": job.device,
        "batch_size": run.batch_size,
        "workers": run.workers,
        "progress": run.progress,
        "pixels": pixels,
        "precision": precision,
    }
    return precision, arguments


@dataclass(frozen=True)
class StoreRequest:
    """The feature store a run of ``protocol`` reads: the opened ``data``, the ``model``
    options, the ``preprocessing`` the protocol's job builds and the compute options
    ``run``. A protocol run, ``features extract`` and a sweep's extraction parts all name
    their store through one of these (:func:`_store_arguments`), so one request always
    names one store."""

    protocol: str
    data: JobData
    model: ModelOptions
    preprocessing: Preprocessing
    run: RunOptions


def prepare_features(roots: Roots, request: StoreRequest) -> FeatureJob:
    """Load the backbone and get (or extract) the features of every row of the request's
    data.

    Pre-resized copies (``datasets prepare``) are read when ``run.use_prepared`` and one
    covers the resize; the record and the printed policies then say so."""
    job = load_model(roots, request.data, request.model, request.run, protocol=request.protocol)
    precision, arguments = _store_arguments(roots, job, request)
    manifest, preprocessing = request.data.manifest, request.preprocessing
    features = get_features(job.backbone, manifest, preprocessing, **arguments)
    job.timings["extraction_s"] = features.seconds
    return FeatureJob(
        **vars(job), preprocessing=preprocessing, features=features, precision=precision
    )


def extract_feature_part(roots: Roots, request: StoreRequest, part: Part) -> PartResult:
    """Extract ``part`` of the store :func:`prepare_features` reads for ``request``
    (:func:`medtransfer.features.store.extract_part`)."""
    from medtransfer.features.store import extract_part

    job = load_model(roots, request.data, request.model, request.run, protocol=request.protocol)
    _, arguments = _store_arguments(roots, job, request)
    root = arguments.pop("store_root")
    manifest, preprocessing = request.data.manifest, request.preprocessing
    return extract_part(job.backbone, manifest, preprocessing, root, part, **arguments)


def feature_store_status(roots: Roots, request: StoreRequest) -> StoreStatus:
    """Where the store :func:`prepare_features` reads for ``request`` stands (loads the
    backbone for its weights' hash; runs no forward pass)."""
    from medtransfer.data.prepare import original_pixels
    from medtransfer.features.store import feature_key, store_status

    job = load_model(roots, request.data, request.model, request.run, protocol=request.protocol)
    _, arguments = _store_arguments(roots, job, request)
    manifest = request.data.manifest
    key = feature_key(
        arguments["weights_sha256"],
        arguments["normalization"],
        arguments["arch"],
        manifest,
        request.preprocessing,
        arguments["pixels"] or original_pixels(manifest),
        arguments["precision"],
    )
    return store_status(arguments["store_root"], key)


def model_params(backbone: Backbone, model: ModelOptions) -> dict[str, Any]:
    """The record parameters of the backbone's input handling and weights (a ``--weights``
    file by its absolute path)."""
    weights = str(Path(model.weights).expanduser().resolve()) if model.weights else None
    return {
        "normalization": backbone.normalization,
        "no_norm": model.no_norm,
        "norm": model.norm,
        "weights": weights,
        "model_seed": model.model_seed,
    }


@dataclass(frozen=True)
class Outcome:
    """A finished protocol run as its record holds it: the ``protocol``, the ``params`` and
    ``seed`` that define the run, its ``metrics``, the result ``lines`` for people, ``extra``
    record keys, ``log_only`` lines (the log holds them before ``lines``), ``arrays`` (name
    -> array) for the record's ``.npz`` sidecar: what a paired comparison of two records
    needs (per-episode accuracies, per-test-row scores with their row ids), the protocol's
    own ``policies`` (name -> sentence, e.g. ``resize``, ``pool``; the shared ones are added
    by :func:`write_job_record`) and its ``headlines``."""

    protocol: str
    params: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    lines: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    log_only: list[str] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    headlines: tuple[Headline, ...] = ()


def run_policies(
    job: ModelJob, own: dict[str, str], pixels: dict[str, Any] | None
) -> dict[str, str]:
    """Every policy in force, in the order they are printed: labels, STOIC slices, the
    protocol's ``own`` (resize, pool, ...), pixels, preset."""
    spec, params = job.data.spec, job.manifest.params
    out: dict[str, str] = {}
    labels = policies.label_policy(spec, params.get("label_policy") or {})
    if labels:
        out["labels"] = labels
    if "orientation" in params:
        out["slices"] = policies.orientation_policy(params["orientation"])
    rows = policies.row_order_policy(spec, job.manifest.root)
    if rows:
        out["rows"] = rows
    out.update(own)
    if pixels is not None:
        out["pixels"] = policies.pixels_policy(pixels, str(pixels.get("folder", "")))
    if job.preset != "none":
        applied = ", ".join(f"{k}={v}" for k, v in _jsonable(job.preset_settings).items())
        out["preset"] = (
            f"{job.preset} (docs/original-study.md#presets); it set {applied or 'nothing'}"
        )
    return out


def write_job_record(
    roots: Roots,
    job: ModelJob,
    outcome: Outcome,
    *,
    extracted: bool | None = None,
    pixels: dict[str, Any] | None = None,
    outputs: Callable[[Path], None] | None = None,
) -> JobResult:
    """Write the record of a finished job and its log; the job's result.

    The record's params gain ``preset`` (``"none"`` or the preset's name) and, under a
    preset, its extra keys gain ``preset_settings`` (the settings the preset applied; the
    params hold every value in force). ``policies`` (:func:`run_policies`, with
    ``pixels``: where the images came from) goes into the record and the log, and into the
    result's ``notes``. ``outputs(folder)`` writes the run's files into the folder beside
    the record (:func:`~medtransfer.results.records.outputs_folder`)."""
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
        in_force=run_policies(job, outcome.policies, pixels),
        label=job.label,
        weights_file=job.weights_file,
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
    in_force: dict[str, str] | None = None,
    label: str = "",
    weights_file: dict[str, str] | None = None,
) -> JobResult:
    """:func:`write_job_record` for a job without a backbone of its own (a job over
    records or files): the record's identity given field by field; ``preset``: the preset's
    name and the settings it applied; ``in_force``: every policy in force (default: the
    outcome's own ``policies``); ``label``/``weights_file``: as :class:`Record` holds them."""
    name, settings = preset
    params = {**outcome.params, "preset": name}
    in_force = dict(outcome.policies) if in_force is None else in_force
    extra = {**outcome.extra, "policies": in_force}
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
        label=label,
        weights_file=weights_file,
    )
    noted = policies.notes(in_force)
    log = [f"INFO:root:{line}" for line in (*outcome.log_only, *noted, *outcome.lines)]
    path = write_record(roots.results, record, log, outcome.arrays, outputs=outputs)
    return JobResult(
        path,
        record.to_json(),
        outcome.metrics,
        list(outcome.lines),
        extracted,
        notes=noted,
        headlines=outcome.headlines,
    )


def write_feature_record(
    roots: Roots,
    job: FeatureJob,
    model: ModelOptions,
    outcome: Outcome,
    *,
    outputs: Callable[[Path], None] | None = None,
) -> JobResult:
    """:func:`write_job_record` for a job over the feature store: the protocol's params
    gain the preprocessing, pixels, model and manifest parameters, the record says which
    features it read, and the log starts with the parameters and the features' origin;
    ``outputs`` as for :func:`write_job_record`."""
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
        "features_rows_reused": job.features.rows_reused,
        "class_names": list(job.manifest.class_names),
        **outcome.extra,
    }
    full = replace(outcome, params=params, extra=extra, log_only=[*header, *outcome.log_only])
    return write_job_record(
        roots,
        job,
        full,
        extracted=job.features.computed,
        pixels=job.features.pixels,
        outputs=outputs,
    )


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    """Preset settings as JSON values (tuples as lists, paths as text)."""
    return {
        k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
        for k, v in settings.items()
    }
