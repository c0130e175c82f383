"""Feature invariance: how much a backbone's features change under a transform.

For --images N images (drawn with --seed), the k views of each under --transform (rotation,
translation, scale, shear, resized_crop, h_flip, v_flip, deform, grayscale, brightness,
contrast, saturation, hue, blur, sharpness, invert, equalize, posterize, or all: one record
each) are compared with the clean image in the Mahalanobis geometry of the dataset's clean
features: whitened cosine similarity (1: the feature did not move) and Mahalanobis
distance, averaged over images and parameter values, with the whole curve over the
parameter values recorded and plotted. The mean and covariance come from the feature store
(--cov ledoit-wolf by default). --multiview compares two views of one subject instead:
CheXpert lateral vs frontal image of a study, EyePACS left vs right eye of a patient with
the same grade. --preset original reproduces the original's sampling, BatchNorm statistics,
normalisation and numerics (docs/original-study.md#invariance).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.jobs import invariance_record as report
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.invariance_options import PRESET, InvarianceOptions
from medtransfer.jobs.invariance_record import RunState
from medtransfer.jobs.options import DataOptions, JobData, ModelOptions, RunOptions

if TYPE_CHECKING:
    import numpy as np

    from medtransfer.analysis.transforms import ViewPlan
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import ModelJob


def _check(options: InvarianceOptions, run: RunOptions) -> None:
    from medtransfer.errors import ConfigError

    if options.images < 0:
        raise ConfigError(f"--images must be 0 or more, got {options.images}.")
    if options.sampling == "original" and options.images == 0:
        raise ConfigError("--sampling original draws a number of images: give --images N.")
    if options.numerics == "original" and options.cov != "sample":
        raise ConfigError(
            "--numerics original is the original's sample covariance: use --cov sample."
        )
    if options.batchnorm == "original" and run.batch_size < 2:
        raise ConfigError("--batchnorm original needs --batch-size of at least 2.")


def _plans(options: InvarianceOptions, crop: int, side: int) -> list[ViewPlan]:
    """The view plan of each transform asked for, with k checked before any work. With
    ``all``, a --k that a transform's grid cannot honour gives way to its default k."""
    from medtransfer.analysis.transforms import TRANSFORM_NAMES, ViewPlan, get_transform, resolve_k
    from medtransfer.errors import ConfigError

    original = options.transform_at == "full"
    names = TRANSFORM_NAMES if options.transform == "all" else (options.transform,)
    plans = []
    for name in names:
        spec = get_transform(name)
        k = options.k
        if options.transform == "all" and k is not None and not spec.k_ok(k):
            k = None
        plan = ViewPlan(
            name, resolve_k(name, k), crop, side, options.transform_at, original, options.seed
        )
        if len(plan.values) == 1 and plan.identity is not None and not options.keep_identity:
            if options.transform != "all":
                raise ConfigError(
                    f"--k {plan.k} leaves only the identity view of {name}; use a larger --k."
                )
            plan = ViewPlan(
                name, spec.default_k, crop, side, options.transform_at, original, options.seed
            )
        plans.append(plan)
    return plans


def _pool(data: JobData) -> np.ndarray:
    """Every manifest row, train and validation rows first, then test (the original's
    train ∪ test order)."""
    import numpy as np

    manifest = data.manifest
    train = np.concatenate([manifest.rows("train"), manifest.rows("val")])
    return np.concatenate([np.sort(train), manifest.rows("test")])


def _draws(
    options: InvarianceOptions, n_pool: int, batch_size: int, n_items: int
) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """(covariance batches as pool positions, evaluated items, whether items are pairs)."""
    import numpy as np

    from medtransfer.analysis.invariance import original_draws

    pairs = options.multiview
    if options.sampling == "original":
        draws = original_draws(
            n_pool,
            batch_size=batch_size,
            num_images=options.images,
            n_pairs=n_items if pairs else None,
        )
        return draws.statistic_batches, draws.items, pairs
    every = np.arange(n_pool)
    batches = [every[i : i + batch_size] for i in range(0, n_pool, batch_size)]
    count = n_items if options.images == 0 else min(options.images, n_items)
    items = np.random.default_rng(options.seed).choice(n_items, size=count, replace=False)
    return batches, np.asarray(items, dtype=np.int64), pairs


def _clean_features(
    roots: Roots,
    data: JobData,
    model: ModelOptions,
    run: RunOptions,
    options: InvarianceOptions,
    preprocessing: Preprocessing,
    batches: list[np.ndarray],
    pool: np.ndarray,
    evaluated: list[np.ndarray],
) -> tuple[ModelJob, Any, str, np.ndarray, list[np.ndarray]]:
    """(job, feature job or None, precision, covariance features, clean features of each
    array of manifest rows in ``evaluated``): from the store in eval mode, else by forward
    passes in the original's batches."""
    import numpy as np

    from medtransfer.compute import resolve_precision
    from medtransfer.jobs.common import StoreRequest, load_model, prepare_features
    from medtransfer.jobs.invariance_features import Network, clean_features

    rows = pool[np.concatenate(batches)]
    if options.batchnorm == "eval":
        request = StoreRequest("invariance", data, model, preprocessing, run)
        feature_job = prepare_features(roots, request)
        store = feature_job.features.features
        picked = [np.asarray(store[r]) for r in evaluated]
        return feature_job, feature_job, feature_job.precision, np.asarray(store[rows]), picked
    job = load_model(roots, data, model, run, protocol="invariance")
    precision = resolve_precision(run.precision, job.device)
    network = Network(job.backbone, job.backbone.normalize, job.device, precision)
    paths, load = data.manifest.absolute_paths(), data.manifest.loader
    common = {"workers": run.workers, "progress": run.progress}
    started = time.perf_counter()
    stats = clean_features(
        network,
        paths,
        load,
        preprocessing,
        batches=[pool[b] for b in batches],
        batchnorm="batch",
        **common,
    )
    picked = []
    for r in evaluated:
        chunks = [r[i : i + run.batch_size] for i in range(0, len(r), run.batch_size)]
        picked.append(
            clean_features(
                network,
                paths,
                load,
                preprocessing,
                batches=chunks,
                batchnorm="per-sample",
                **common,
            )
        )
    job.timings["clean_features_s"] = time.perf_counter() - started
    return job, None, precision, stats, picked


def _geometry(options: InvarianceOptions, features: np.ndarray) -> Any:
    from medtransfer.analysis.invariance import fit_geometry, original_geometry

    if options.numerics == "original":
        return original_geometry(features)
    return fit_geometry(features, options.cov)


def _scores(
    options: InvarianceOptions, shared: RunState, views: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    from medtransfer.analysis.invariance import invariance_scores, original_scores

    score = original_scores if options.numerics == "original" else invariance_scores
    return score(shared.geometry, shared.clean, views, device=shared.job.device)


def _synthetic(
    roots: Roots,
    opened: JobData,
    model: ModelOptions,
    options: InvarianceOptions,
    run: RunOptions,
) -> list[JobResult]:
    from medtransfer.analysis.transforms import get_transform
    from medtransfer.data.prepare import file_stats
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.fsutil import sha256_json
    from medtransfer.jobs.invariance_features import Network, describe_items, view_features
    from medtransfer.models.normalization import make_normalization

    preprocessing = Preprocessing(options.image_size, resize="ratio")
    plans = _plans(options, options.image_size, preprocessing.resize_side())
    pool = _pool(opened)
    batches, positions, _ = _draws(options, len(pool), run.batch_size, len(pool))
    items = pool[positions]
    job, feature_job, precision, stats, (clean,) = _clean_features(
        roots, opened, model, run, options, preprocessing, batches, pool, [items]
    )
    shared = RunState(job, pool, items, clean, _geometry(options, stats), preprocessing, precision)
    shared.feature_job = feature_job
    backbone = job.backbone
    norm = backbone.normalization
    if options.view_norm == "original" and norm != "none":
        normalize, view_norm = make_normalization("imagenet"), "imagenet"
    else:
        normalize, view_norm = backbone.normalize, norm
    network = Network(backbone, normalize, job.device, precision)
    manifest = opened.manifest
    all_paths = manifest.absolute_paths()
    paths = [all_paths[int(r)] for r in items]
    names = [str(manifest.table["path"].iat[int(r)]) for r in items]
    files = manifest.files()
    identity = describe_items(names, file_stats([files[int(r)] for r in items]))
    batchnorm = "batch" if options.batchnorm == "original" else "eval"
    results = []
    for plan in plans:
        started = time.perf_counter()
        key = sha256_json(
            {
                "version": 1,
                "weights": backbone.weights_sha256,
                "arch": backbone.spec.arch,
                "view_normalization": view_norm,
                "plan": plan.describe(),
                "items": identity,
                "batchnorm": batchnorm,
                "precision": precision,
            }
        )[:16]
        folder = roots.cache / "invariance" / backbone.spec.name / opened.key / key
        views = view_features(
            network,
            plan,
            paths,
            manifest.loader,
            folder,
            batchnorm=batchnorm,
            batch_size=run.batch_size,
            workers=run.workers,
            progress=run.progress,
        )
        similarity, distance = _scores(options, shared, views)
        job.timings[f"{plan.transform}_s"] = time.perf_counter() - started
        extra = {"view_normalization": view_norm}
        outcome = report.outcome(
            options,
            shared,
            model,
            run,
            plan.transform,
            plan.describe(),
            plan.values,
            plan.identity,
            similarity,
            distance,
            extra,
        )
        if options.k is not None and plan.k != options.k:
            rule = get_transform(plan.transform).k_rule
            note = (
                f"k = {plan.k}: --k {options.k} does not fit {plan.transform}, which takes {rule}"
            )
            record, outputs = outcome
            outcome = (dataclasses.replace(record, lines=[*record.lines, note]), outputs)
        results.append(report.write(roots, shared, model, outcome))
    return results


def _multiview(
    roots: Roots,
    opened: JobData,
    model: ModelOptions,
    options: InvarianceOptions,
    run: RunOptions,
) -> list[JobResult]:
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.errors import ConfigError

    spec = opened.spec
    if spec.view_pairs is None:
        raise ConfigError(
            f"--multiview pairs two views of one subject; {spec.name} has none. It is defined "
            "for chexpert (lateral and frontal) and diabetic_retinopathy (left and right eye)."
        )
    pairs = spec.view_pairs(opened.manifest.table)
    if not len(pairs):
        raise ConfigError(
            f"{spec.name}: no {pairs.views[0]}/{pairs.views[1]} pair in the data "
            f"({', '.join(f'{v} {k}' for k, v in pairs.unpaired.items()) or 'no rows'})."
        )
    preprocessing = Preprocessing(options.image_size, resize="shorter")
    pool = _pool(opened)
    batches, chosen, _ = _draws(options, len(pool), run.batch_size, len(pairs))
    first, second = pairs.first[chosen], pairs.second[chosen]
    job, feature_job, precision, stats, (one, two) = _clean_features(
        roots, opened, model, run, options, preprocessing, batches, pool, [first, second]
    )
    shared = RunState(job, pool, first, one, _geometry(options, stats), preprocessing, precision)
    shared.feature_job = feature_job
    started = time.perf_counter()
    similarity, distance = _scores(options, shared, two[:, None])
    job.timings["multiview_s"] = time.perf_counter() - started
    table = opened.manifest.table
    extra = {
        "views": list(pairs.views),
        "pairs_available": len(pairs),
        "unpaired": pairs.unpaired,
        "partners": [str(table["path"].iat[int(r)]) for r in second],
    }
    describe = {"transform": "multi_view", "views": list(pairs.views)}
    view_names = f"{pairs.views[0]}-{pairs.views[1]}"
    outcome = report.outcome(
        options,
        shared,
        model,
        run,
        "multi_view",
        describe,
        [view_names],
        None,
        similarity,
        distance,
        extra,
    )
    drawn = "draws (with replacement) from" if options.sampling == "original" else "of"
    record, outputs = outcome
    record = dataclasses.replace(
        record,
        lines=[
            *record.lines,
            f"{len(similarity)} {drawn} {len(pairs)} pairs; rows without a partner: "
            + (", ".join(f"{v} {k}" for k, v in pairs.unpaired.items()) or "none"),
        ],
    )
    return [report.write(roots, shared, model, (record, outputs))]


def run_invariance(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: InvarianceOptions,
    run: RunOptions,
) -> JobResult:
    """One record per transform (or one for the multi-view pairs); with several, the
    result is the last one and its lines name every record."""
    from medtransfer.jobs.common import open_job_data

    _check(options, run)
    if not options.multiview:
        from medtransfer.data.transforms import Preprocessing

        _plans(
            options, options.image_size, Preprocessing(options.image_size, "ratio").resize_side()
        )
    opened = open_job_data(roots, data, model, "invariance")
    run_fn = _multiview if options.multiview else _synthetic
    results = run_fn(roots, opened, model, options, run)
    if len(results) == 1:
        return results[0]
    lines = []
    for result in results[:-1]:
        lines += [*result.lines, f"record: {result.record_path}"]
    return dataclasses.replace(results[-1], lines=[*lines, *results[-1].lines])


JOB = Job(
    "invariance",
    run_invariance,
    __doc__,
    presets={"original": PRESET},
    # with --batchnorm original the covariance images go through in batches of --batch-size
    result_options=("batch_size",),
)
