"""Fine-tune the whole network (the original's recipe, with its defects fixed).

SGD with Nesterov momentum 0.9, cosine schedule over --steps, batch 64, random resized
crop and horizontal flip. With --early-stopping it trains on train, validates every
--eval-every steps on val with the dataset's metric, stops after --patience checks without
improvement and TESTS THE BEST WEIGHTS (the original tested the last ones; --test-last
reproduces that). Without it, it trains on train+val. AUC comes from probabilities
(--auc-from labels: the original's hard-label AUC). It reads the original image files:
pre-resized copies only when they are large enough for its random crops (915 px for
224-px crops). Checkpoints let an interrupted run resume. --preset original sets what the
published runs used (docs/original-study.md#presets).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import ProtocolError
from medtransfer.jobs.base import Headline, Job, JobResult
from medtransfer.jobs.flags import (
    bootstrap_option,
    image_size_option,
    int_list,
    option,
    or_original,
)
from medtransfer.jobs.options import DataOptions, JobData, ModelOptions, RunOptions
from medtransfer.jobs.original import EVERY_RUN, ORIGINAL
from medtransfer.protocols.finetune_config import SEARCH_GRID_SIZE, FinetuneConfig
from medtransfer.protocols.metrics import AUC, AUC_SOURCES

if TYPE_CHECKING:
    from medtransfer.data.manifest import Manifest
    from medtransfer.data.prepare import PixelSource
    from medtransfer.protocols.finetune_data import ImageSplit

_RECIPE = FinetuneConfig()
#: The learning rates of the published runs: ``finetune.py`` kept its default,
#: ``finetune_auc.py`` ran with ``--lr 3e-5`` (docs/original-study.md#finetune).
ORIGINAL_LR = {"dataset": _RECIPE.lr, AUC: 3e-5}


@dataclass(frozen=True)
class FinetuneOptions:
    """The original's fine-tuning flags (docs/original-study.md#finetune) plus our additions.

    The training batch is :class:`RunOptions`' ``batch_size``.
    """

    steps: int = option(_RECIPE.steps, "optimisation steps")
    eval_every: int = option(_RECIPE.eval_every, "steps between val checks")
    patience: int = option(
        _RECIPE.patience, "checks without improvement", flags=("-p", "--patience")
    )
    lr: float | str = option(
        _RECIPE.lr,
        "learning rate, or original (the published runs': 1e-2, with --metric auc 3e-5)",
        parse=or_original(float),
    )
    wd: float = option(_RECIPE.wd, "weight decay")
    early_stopping: bool = option(
        _RECIPE.early_stopping, "stop on val, test best weights", flags=("-e", "--early-stopping")
    )
    search: bool = option(
        False, "the original's lr/wd grid search on val", flags=("-s", "--search")
    )
    grid_size: int = option(SEARCH_GRID_SIZE, "points per grid axis", flags=("-g", "--grid-size"))
    augment: bool = option(_RECIPE.augment, "no training augmentation", flags=("--no-da",))
    image_size: int = image_size_option(_RECIPE.image_size)
    seeds: tuple[int, ...] = option((0,), "comma-separated seeds; mean and spread", parse=int_list)
    metric: str = option(
        "dataset",
        "the dataset's metric, or auc (the original's finetune_auc.py, from probabilities)",
        choices=("dataset", AUC),
    )
    restore_best: bool = option(
        _RECIPE.restore_best,
        "test the last weights even with early stopping (the original's behaviour)",
        flags=("--test-last",),
    )
    auc_from: str = option(
        _RECIPE.auc_from,
        "with --metric auc: probabilities (a ranking AUC) or labels (the original's "
        "finetune_auc.py: AUC of argmax labels, i.e. balanced accuracy), for early stopping "
        "and the test",
        choices=AUC_SOURCES,
    )
    bootstrap: int = bootstrap_option()


def _config(options: FinetuneOptions, run: RunOptions, **fixed: Any) -> FinetuneConfig:
    """The recipe of one run: the options' recipe fields, the run's batch size and workers,
    and ``fixed`` (seed, metric, lr, wd)."""
    shared = {f.name for f in fields(FinetuneConfig)} & {f.name for f in fields(FinetuneOptions)}
    recipe = {name: getattr(options, name) for name in shared}
    return FinetuneConfig(
        **{**recipe, "batch_size": run.batch_size, "workers": run.workers, **fixed}
    )


def _pixels(
    roots: Roots, opened: JobData, options: FinetuneOptions, run: RunOptions
) -> tuple[PixelSource, dict[str, Any]]:
    """Where fine-tuning reads its images, and the record of that choice.

    Pre-resized copies change what random resized crops see (a small copy's crops are
    enlarged), so they are read only when their shorter side reaches what the augmentation
    needs (:func:`~medtransfer.protocols.finetune_data.crop_min_side`; the crop size
    without augmentation); otherwise the original files, with the reason recorded.
    """
    from medtransfer.data.prepare import original_pixels, prepared_pixels, prepared_sizes
    from medtransfer.protocols.finetune_data import crop_min_side

    needed = crop_min_side(options.image_size) if options.augment else options.image_size
    if run.use_prepared:
        prepared = prepared_pixels(opened.manifest, roots.cache, opened.key, needed)
        if prepared is not None:
            return prepared, {**prepared.describe, "needed_side": needed}
    pixels = original_pixels(opened.manifest)
    sizes = prepared_sizes(roots.cache, opened.key)
    if not run.use_prepared:
        by_preset = "use_prepared" in run.preset_settings
        reason = "--no-prepared" + (" (set by the preset)" if by_preset else "")
    elif sizes and max(sizes) < needed:
        shown = ", ".join(f"{size}" for size in sizes)
        reason = (
            f"the pre-resized copies ({shown} px) are smaller than the {needed} px shorter side "
            f"{'its random resized crops need' if options.augment else 'the crop needs'}"
        )
    else:
        reason = ""
    record = {**pixels.describe, "needed_side": needed}
    if reason:
        record["reason"] = reason
    return pixels, record


def _split(manifest: Manifest, pixels: PixelSource, name: str) -> ImageSplit:
    from medtransfer.protocols.finetune_data import ImageSplit

    rows, labels = manifest.rows(name), manifest.labels
    return ImageSplit(
        [pixels.paths[i] for i in rows], [int(labels[i]) for i in rows], pixels.loader
    )


def run_finetune(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: FinetuneOptions,
    run: RunOptions,
) -> JobResult:
    """Fine-tune ``model`` on ``data`` once per seed; write one record with every seed.

    Unlike the feature protocols it trains the whole network, so it reads images rather
    than the feature store: the original files, or pre-resized copies large enough for its
    augmentation (:func:`_pixels`). Each seed's run checkpoints under
    ``<cache>/finetune/<run key>/`` and resumes from there. Prints the test metric of every
    seed (and the spread over several).
    """
    from medtransfer.compute import resolve_precision
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.fsutil import sha256_json
    from medtransfer.jobs.common import (
        Outcome,
        load_model,
        model_params,
        open_job_data,
        write_job_record,
    )
    from medtransfer.protocols.finetune import FinetuneResult, finetune, run_search
    from medtransfer.protocols.finetune_data import FinetuneData
    from medtransfer.protocols.metrics import metric_key
    from medtransfer.protocols.stats import (
        format_interval,
        format_spread,
        mean_over_seeds,
        metrics_with_interval,
    )

    started = time.perf_counter()
    variant = "finetune-auc" if options.metric == AUC else "finetune"
    opened = open_job_data(roots, data, model, variant)
    manifest = opened.manifest
    metric = opened.spec.metric if options.metric == "dataset" else options.metric
    auc_from = options.auc_from if metric == AUC else "probabilities"
    check_finetune_data(manifest, options, metric)
    pixels, pixels_record = _pixels(roots, opened, options, run)
    splits = FinetuneData(
        train=_split(manifest, pixels, "train"),
        val=_split(manifest, pixels, "val"),
        test=_split(manifest, pixels, "test"),
        n_classes=len(manifest.class_names),
        eval_transform=lambda size: Preprocessing(size, resize="shorter"),
    )
    job = load_model(roots, opened, model, run, protocol="finetune")
    precision = resolve_precision(run.precision, job.device, training=True)
    first = job.backbone
    results: list[FinetuneResult] = []
    per_seed: list[dict[str, Any]] = []
    searched: dict[str, Any] | None = None
    lr = ORIGINAL_LR[options.metric] if options.lr == ORIGINAL else float(options.lr)
    wd = options.wd
    for seed in options.seeds:
        config = _config(
            options, run, seed=seed, metric=metric, lr=lr, wd=wd, precision=precision,
            auc_from=auc_from,
        )  # fmt: skip
        run_key = sha256_json(
            {
                "weights": first.weights_sha256,
                "normalization": first.normalization,
                "manifest": manifest.hash,
                "pixels": pixels.describe,
                "config": config.identity(),
                "search": options.search,
            }
        )[:16]
        folder = roots.cache / "finetune" / run_key
        if options.search and searched is None:
            found = run_search(
                lambda: model.load(roots, progress=run.progress, protocol="finetune"),
                splits,
                config,
                grid_size=options.grid_size,
                device=job.device,
                checkpoint_dir=folder,
                progress=run.progress,
            )
            searched = {"lr": found.lr, "wd": found.wd, "scores": found.scores}
            lr, wd = found.lr, found.wd
            config = replace(config, lr=lr, wd=wd)
        backbone = (
            first if not results else model.load(roots, progress=run.progress, protocol="finetune")
        )
        result = finetune(
            backbone,
            splits,
            config,
            device=job.device,
            checkpoint_dir=folder,
            progress=run.progress,
        )
        results.append(result)
        assert result.test_labels is not None and result.test_probs is not None
        per_seed.append(
            {
                "seed": seed,
                "metrics": metrics_with_interval(
                    result.test_labels,
                    result.test_probs,
                    metric,
                    n_resamples=options.bootstrap,
                    seed=seed,
                    auc_from=auc_from,
                ),
                "best_step": result.best_step,
                "stopped_step": result.stopped_step,
                "steps_run": result.steps_run,
                "tested": result.tested,
                "val_curve": result.val_curve,
                "resumed_from": result.resumed_from,
                "checkpoint_dir": str(folder),
            }
        )
    name = metric_key(metric, auc_from)
    shown = f"{metric} from hard labels" if name == "auc_from_labels" else metric
    metrics = mean_over_seeds([entry["metrics"] for entry in per_seed], name)
    lines = [
        f"seed {s['seed']}: test {shown} {s['metrics'][name]:.2f}%"
        f"{format_interval(s['metrics'], name)}, tested the {s['tested']} weights"
        + (f" of step {s['best_step']}" if s["tested"] == "best" else "")
        for s in per_seed
    ]
    if len(per_seed) > 1:
        lines.append(format_spread(metrics, name, "seeds"))
    params = {
        **{k: v for k, v in asdict(options).items() if k != "seeds"},
        "batch_size": run.batch_size,
        "seeds": list(options.seeds),
        "lr": lr,
        "wd": wd,
        "metric": metric,
        "momentum": _RECIPE.momentum,
        "nesterov": _RECIPE.nesterov,
        "schedule": "cosine",
        "auc_from": auc_from if metric == AUC else None,
        "preprocessing": {
            "image_size": options.image_size,
            "train": "random resized crop + flip" if options.augment else "resize + centre crop",
            "eval": "shorter-side resize + centre crop",
        },
        "pixels": pixels_record,
        "precision": precision,
        **model_params(first, model),
        **manifest.params,
    }
    job.timings["total_s"] = time.perf_counter() - started
    sizes = {"train": results[0].n_train, "val": results[0].n_val, "test": results[0].n_test}
    extra = {
        "per_seed": per_seed,
        "search": searched,
        "class_names": list(manifest.class_names),
        "sizes": sizes,
    }
    log_only = [f"Params {{'lr': {lr}, 'wd': {wd}}}"]
    headline = Headline(shown, float(metrics[name]), format_interval(metrics, name).strip(" ()"))
    outcome = Outcome(
        "finetune", params, int(options.seeds[0]), metrics, lines, extra, log_only,
        headlines=(headline,),
    )  # fmt: skip
    return write_job_record(roots, job, outcome, pixels=pixels_record)


def check_finetune_data(manifest: Manifest, options: FinetuneOptions, metric: str) -> None:
    """Refuse, before any image is read, what the manifest alone shows cannot run: fewer
    than two classes with training images, an empty test split, no validation split for
    early stopping or the search, auc on a task that is not binary."""
    import numpy as np

    from medtransfer.jobs.checks import require_classes, require_test_rows

    train = manifest.rows("train")
    if not options.early_stopping:
        train = np.concatenate([train, manifest.rows("val")])
    require_classes(manifest, train, "fine-tuning", "the training split")
    require_test_rows(manifest)
    if (options.early_stopping or options.search) and len(manifest.rows("val")) == 0:
        what = "--early-stopping" if options.early_stopping else "--search"
        raise ProtocolError(
            f"{what} needs a validation split; use --val-fraction > 0 (now "
            f"{manifest.params.get('val_fraction')})."
        )
    if metric == AUC and len(manifest.class_names) != 2:
        raise ProtocolError(
            f"--metric auc needs a binary task; {manifest.dataset} has "
            f"{len(manifest.class_names)} classes."
        )


JOB = Job(
    "finetune",
    run_finetune,
    __doc__,
    presets={
        "original": {
            **EVERY_RUN,
            "split_policy": "original",
            "uncertain": ORIGINAL,
            "norm": ORIGINAL,
            "early_stopping": True,
            "restore_best": False,
            "auc_from": "labels",
            "lr": ORIGINAL,
        }
    },
    result_options=("batch_size",),
)
