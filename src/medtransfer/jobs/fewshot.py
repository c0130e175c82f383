"""The few-shot job: features from the store, episodes, record."""

from __future__ import annotations

import time
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
        **feature_params(job, model),
    }
    path, record = write_job_record(
        roots,
        job,
        protocol="few-shot",
        params=params,
        seed=options.seed,
        metrics={
            "accuracy": summary.accuracy,
            "accuracy_ci95": summary.ci95,
            "accuracy_std": summary.std,
            "episodes": summary.episodes,
        },
        extra={},
        result_lines=[f"episodes drawn from {len(rows)} rows", summary.line()],
    )
    return FewShotResult(summary, path, record, job.features.computed)
