"""The few-shot job: features from the store, episodes, record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.config import Roots
from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.transforms import Preprocessing
from medtransfer.jobs.common import (
    DataOptions,
    ModelOptions,
    RunOptions,
    feature_params,
    prepare_features,
    write_job_record,
)
from medtransfer.protocols.fewshot import (
    FewShotSummary,
    episode_accuracies,
    sample_episodes,
    summarize,
)
from medtransfer.protocols.stats import mean_over_seeds


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
    seeds: Sequence[int] | None = None  # several episode seeds: mean and spread


@dataclass(frozen=True)
class FewShotResult:
    """A finished few-shot run."""

    summary: FewShotSummary
    record_path: Path
    record: dict[str, Any]
    extracted: bool
    lines: list[str]


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
    seeds = list(options.seeds) if options.seeds else [options.seed]
    per_seed: list[dict[str, Any]] = []
    summaries: list[FewShotSummary] = []
    for seed in seeds:
        episodes = sample_episodes(
            labels,
            n_way=options.n_way,
            n_support=options.n_support,
            n_query=options.n_query,
            n_episodes=options.iter_num,
            seed=seed,
            class_names=job.manifest.class_names,
        )
        accuracies = episode_accuracies(job.features.features[rows], episodes, device=job.device)
        summary = summarize(accuracies)
        summaries.append(summary)
        per_seed.append(
            {
                "accuracy": summary.accuracy,
                "accuracy_ci95": summary.ci95,
                "accuracy_std": summary.std,
                "episodes": summary.episodes,
            }
        )
    job.timings["episodes_s"] = time.perf_counter() - start
    params: dict[str, Any] = {
        "n_way": options.n_way,
        "n_support": options.n_support,
        "n_query": options.n_query,
        "iter_num": options.iter_num,
        "pool": options.pool,
        "seeds": seeds if options.seeds else None,
        **feature_params(job, model),
    }
    lines = [f"episodes drawn from {len(rows)} rows"]
    lines += [
        (f"[seed {seed}] " if len(seeds) > 1 else "") + summary.line()
        for seed, summary in zip(seeds, summaries, strict=True)
    ]
    metrics = mean_over_seeds(per_seed, "accuracy")
    if len(seeds) > 1:
        spread_ = metrics["accuracy_spread"]
        lines.append(
            f"over {spread_['n']} episode seeds: {spread_['mean']:.2f}% "
            f"± {spread_['std']:.2f} (std)"
        )
    path, record = write_job_record(
        roots,
        job,
        protocol="few-shot",
        params=params,
        seed=seeds[0],
        metrics=metrics,
        extra={"per_seed": [{"seed": s, **m} for s, m in zip(seeds, per_seed, strict=True)]}
        if len(seeds) > 1
        else {},
        result_lines=lines,
    )
    summary = summaries[0]
    return FewShotResult(summary, path, record, job.features.computed, lines)
