"""Fine-tune the whole network (the original's recipe, with its defects fixed).

SGD with Nesterov momentum 0.9, cosine schedule over --steps, batch 64, random resized
crop and horizontal flip. With --early-stopping it trains on train, validates every
--eval-every steps on val with the dataset's metric, stops after --patience checks without
improvement and TESTS THE BEST WEIGHTS (the original tested the last ones; --test-last
reproduces that). Without it, it trains on train+val. AUC comes from probabilities.
Checkpoints let an interrupted run resume.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import bootstrap_option, image_size_option, int_list, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.protocols.finetune_config import SEARCH_GRID_SIZE, FinetuneConfig
from medtransfer.protocols.metrics import AUC

if TYPE_CHECKING:
    from medtransfer.data.manifest import Manifest
    from medtransfer.data.prepare import PixelSource
    from medtransfer.protocols.finetune_data import ImageSplit

_RECIPE = FinetuneConfig()


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
    lr: float = option(_RECIPE.lr, "learning rate")
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
    bootstrap: int = bootstrap_option()


def _config(options: FinetuneOptions, run: RunOptions, **fixed: Any) -> FinetuneConfig:
    """The recipe of one run: the options' recipe fields, the run's batch size and workers,
    and ``fixed`` (seed, metric, lr, wd)."""
    shared = {f.name for f in fields(FinetuneConfig)} & {f.name for f in fields(FinetuneOptions)}
    recipe = {name: getattr(options, name) for name in shared}
    return FinetuneConfig(
        **{**recipe, "batch_size": run.batch_size, "workers": run.workers, **fixed}
    )


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

    Unlike the feature protocols it trains the whole network, so it reads images (from a
    pre-resized copy when ``datasets prepare`` made one) rather than the feature store.
    Each seed's run checkpoints under ``<cache>/finetune/<run key>/`` and resumes from
    there. Prints the test metric of every seed (and the spread over several).
    """
    from medtransfer.compute import resolve_precision
    from medtransfer.data.prepare import original_pixels, prepared_pixels
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.fsutil import sha256_json
    from medtransfer.jobs.common import Outcome, load_model, model_params, write_job_record
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
    opened = data.open(roots)
    manifest = opened.manifest
    metric = opened.spec.metric if options.metric == "dataset" else options.metric
    pixels = None
    if run.use_prepared:
        pixels = prepared_pixels(manifest, roots.cache, opened.key, options.image_size)
    pixels = pixels or original_pixels(manifest)
    splits = FinetuneData(
        train=_split(manifest, pixels, "train"),
        val=_split(manifest, pixels, "val"),
        test=_split(manifest, pixels, "test"),
        n_classes=len(manifest.class_names),
        eval_transform=lambda size: Preprocessing(size, resize="shorter"),
    )
    job = load_model(roots, opened, model, run)
    precision = resolve_precision(run.precision, job.device, training=True)
    first = job.backbone
    results: list[FinetuneResult] = []
    per_seed: list[dict[str, Any]] = []
    searched: dict[str, Any] | None = None
    lr, wd = options.lr, options.wd
    for seed in options.seeds:
        config = _config(options, run, seed=seed, metric=metric, lr=lr, wd=wd, precision=precision)
        run_key = sha256_json(
            {
                "weights": first.weights_sha256,
                "normalization": first.normalization,
                "manifest": manifest.hash,
                "pixels": pixels.describe,
                "config": config.__dict__,
                "search": options.search,
            }
        )[:16]
        folder = roots.cache / "finetune" / run_key
        if options.search and searched is None:
            found = run_search(
                lambda: model.load(roots, progress=run.progress),
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
        backbone = first if not results else model.load(roots, progress=run.progress)
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
    name = metric_key(metric)
    metrics = mean_over_seeds([entry["metrics"] for entry in per_seed], name)
    lines = [
        f"seed {s['seed']}: test {metric} {s['metrics'][name]:.2f}%"
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
        "auc_from": "probabilities" if metric == AUC else None,
        "preprocessing": {
            "image_size": options.image_size,
            "train": "random resized crop + flip" if options.augment else "resize + centre crop",
            "eval": "shorter-side resize + centre crop",
        },
        "pixels": pixels.describe,
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
    outcome = Outcome("finetune", params, int(options.seeds[0]), metrics, lines, extra, log_only)
    return write_job_record(roots, job, outcome)


JOB = Job("finetune", run_finetune, __doc__, result_options=("batch_size",))
