"""The fine-tuning job: manifest splits -> fresh backbone per seed -> trained, tested, recorded.

Unlike the feature protocols it trains the whole network, so it reads images (from a
pre-resized copy when ``datasets prepare`` made one) rather than the feature store.
Each seed's run checkpoints under ``<cache>/finetune/<run key>/`` and resumes from there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import Roots, resolve_device
from medtransfer.data.catalog import dataset_key, resolve_dataset
from medtransfer.data.manifest import Manifest
from medtransfer.data.prepare import PixelSource, original_pixels, prepared_pixels
from medtransfer.fsutil import sha256_json
from medtransfer.jobs.common import DataOptions, ModelOptions, RunOptions
from medtransfer.models.backbone import Backbone
from medtransfer.protocols.finetune import (
    AUC,
    FinetuneConfig,
    FinetuneData,
    FinetuneResult,
    ImageSplit,
    finetune,
    run_search,
    score,
)
from medtransfer.protocols.metrics import metric_key
from medtransfer.protocols.stats import format_interval, interval_entries, mean_over_seeds
from medtransfer.results.records import Record, environment_info, write_record


@dataclass(frozen=True)
class FinetuneOptions:
    """The original's fine-tuning flags (spec/evaluations.md §3.1) plus our additions."""

    steps: int = 5000
    eval_every: int = 200
    patience: int = 3
    batch_size: int = 64
    lr: float = 1e-2
    wd: float = 1e-8
    early_stopping: bool = False
    search: bool = False
    grid_size: int = 2
    augment: bool = True
    image_size: int = 224
    seeds: Sequence[int] = field(default=(0,))
    metric: str | None = None  # None: the dataset's; "auc" as the original's finetune_auc
    restore_best: bool = True
    bootstrap: int = 1000


@dataclass(frozen=True)
class FinetuneJobResult:
    """A finished fine-tuning job: one result per seed, the record and summary lines."""

    results: list[FinetuneResult]
    record_path: Path
    record: dict[str, Any]
    lines: list[str]


def _split(manifest: Manifest, pixels: PixelSource, name: str) -> ImageSplit:
    present = set(manifest.table["split"])
    rows = manifest.select(name) if name in present else np.array([], dtype=np.int64)
    labels = manifest.labels
    return ImageSplit(
        [pixels.paths[i] for i in rows], [int(labels[i]) for i in rows], pixels.loader
    )


def _seed_metrics(result: FinetuneResult, metric: str, bootstrap: int, seed: int) -> dict:
    assert result.test_labels is not None and result.test_probs is not None
    name = metric_key(metric)
    entries = interval_entries(
        name,
        lambda t, p: score(metric, t, p),
        result.test_labels,
        result.test_probs,
        n_resamples=bootstrap,
        seed=seed,
    )
    return {**result.metrics, **entries}


def run_finetune(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: FinetuneOptions,
    run: RunOptions,
) -> FinetuneJobResult:
    """Fine-tune ``model`` on ``data`` once per seed; write one record with every seed."""
    started = time.perf_counter()
    resolved = resolve_dataset(data.dataset, roots.data, roots.cache)
    manifest = data.manifest(roots)
    metric = options.metric or resolved.spec.metric
    device = resolve_device(run.device)
    key = dataset_key(resolved.spec)
    pixels = None
    if run.use_prepared:
        pixels = prepared_pixels(manifest, roots.cache, key, options.image_size)
    pixels = pixels or original_pixels(manifest)
    splits = FinetuneData(
        train=_split(manifest, pixels, "train"),
        val=_split(manifest, pixels, "val"),
        test=_split(manifest, pixels, "test"),
        n_classes=len(manifest.class_names),
    )

    def fresh() -> Backbone:
        return model.load(roots, progress=run.progress)

    first = fresh()
    results: list[FinetuneResult] = []
    per_seed: list[dict[str, Any]] = []
    searched: dict[str, Any] | None = None
    lr, wd = options.lr, options.wd
    for seed in options.seeds:
        config = FinetuneConfig(
            lr=lr,
            wd=wd,
            steps=options.steps,
            batch_size=options.batch_size,
            eval_every=options.eval_every,
            patience=options.patience,
            early_stopping=options.early_stopping,
            augment=options.augment,
            image_size=options.image_size,
            seed=seed,
            metric=metric,
            restore_best=options.restore_best,
            workers=run.workers,
        )
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
                fresh,
                splits,
                config,
                grid_size=options.grid_size,
                device=device,
                checkpoint_dir=folder,
                progress=run.progress,
            )
            searched = {"lr": found.lr, "wd": found.wd, "scores": found.scores}
            lr, wd = found.lr, found.wd
            config = FinetuneConfig(**{**config.__dict__, "lr": lr, "wd": wd})
        backbone = first if not results else fresh()
        result = finetune(
            backbone, splits, config, device=device, checkpoint_dir=folder, progress=run.progress
        )
        results.append(result)
        per_seed.append(
            {
                "seed": seed,
                "metrics": _seed_metrics(result, metric, options.bootstrap, seed),
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
        spread_ = metrics[f"{name}_spread"]
        lines.append(
            f"over {spread_['n']} seeds: {spread_['mean']:.2f}% ± {spread_['std']:.2f} (std)"
        )
    params = {
        **{k: v for k, v in options.__dict__.items() if k != "seeds"},
        "seeds": list(options.seeds),
        "lr": lr,
        "wd": wd,
        "metric": metric,
        "momentum": 0.9,
        "nesterov": True,
        "schedule": "cosine",
        "auc_from": "probabilities" if metric == AUC else None,
        "preprocessing": {
            "image_size": options.image_size,
            "train": "random resized crop + flip" if options.augment else "resize + centre crop",
            "eval": "shorter-side resize + centre crop",
        },
        "pixels": pixels.describe,
        "normalization": first.normalization,
        "no_norm": model.no_norm,
        "norm": model.norm or "default",
        "weights": str(model.weights) if model.weights else None,
        "model_seed": model.model_seed,
        **manifest.params,
    }
    record = Record(
        protocol="finetune",
        model=first.spec.name,
        dataset=manifest.dataset,
        params=params,
        seed=int(options.seeds[0]),
        metrics=metrics,
        weights_sha256=first.weights_sha256,
        manifest_hash=manifest.hash,
        timings={"total_s": time.perf_counter() - started},
        environment=environment_info(device),
        extra={
            "per_seed": per_seed,
            "search": searched,
            "class_names": list(manifest.class_names),
            "sizes": {
                "train": results[0].n_train,
                "val": results[0].n_val,
                "test": results[0].n_test,
            },
        },
    )
    log = [f"INFO:root:Params {{'lr': {lr}, 'wd': {wd}}}"] + [f"INFO:root:{line}" for line in lines]
    path = write_record(roots.results, record, log)
    return FinetuneJobResult(results, path, record.to_json(), lines)
