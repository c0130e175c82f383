"""Prototypical-network few-shot evaluation over cached features.

Few-shot evaluation as in the original study (prototypical networks, squared Euclidean
distance to class means), over features extracted once. Prints 'Test Acc = X% +- Y%' and
writes a record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from medtransfer.config import Roots
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import image_size_option, int_list, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions


@dataclass(frozen=True)
class FewShotOptions:
    """The original's few-shot flags (docs/original-study.md#few-shot) plus the episode pool."""

    n_way: int = option(5, "classes per episode")
    n_support: int = option(5, "support images per class")
    n_query: int = option(15, "query images per class")
    iter_num: int = option(600, "number of episodes")
    image_size: int = image_size_option()
    resize: str | None = option(
        None,
        "resize geometry (default: the original's for the dataset)",
        choices=("square", "shorter"),
    )
    pool: str = option(
        "all",
        "which split episodes draw from, all as in the original",
        choices=("all", "train", "test"),
    )
    seed: int = option(0, "episode seed")
    seeds: tuple[int, ...] | None = option(
        None, "comma-separated episode seeds: one run each, with mean and spread", parse=int_list
    )


def run_few_shot(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: FewShotOptions,
    run: RunOptions,
) -> JobResult:
    """Prototypical-network few-shot evaluation; writes and returns its record.

    Prints ``Test Acc = X% +- Y%`` per episode seed (and the spread over several).
    """
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import Outcome, prepare_features, write_feature_record
    from medtransfer.protocols.fewshot import episode_accuracies, sample_episodes, summarize
    from medtransfer.protocols.stats import format_spread, mean_over_seeds
    from medtransfer.results.sidecar import episode_arrays, episodes_digest

    opened = data.open(roots)
    resize = options.resize or opened.spec.few_shot_resize
    preprocessing = Preprocessing(image_size=options.image_size, resize=resize)
    job = prepare_features(roots, opened, model, preprocessing, run)
    start = time.perf_counter()
    rows = job.manifest.select(options.pool)
    labels = job.features.labels[rows]
    seeds = list(options.seeds) if options.seeds else [options.seed]
    per_seed: list[dict[str, Any]] = []
    lines = []
    paired: list[tuple[Any, str]] = []  # per seed: episode accuracies, episodes digest
    shape = {"n_way": options.n_way, "n_support": options.n_support, "n_query": options.n_query}
    for seed in seeds:
        episodes = sample_episodes(
            labels,
            **shape,
            n_episodes=options.iter_num,
            seed=seed,
            class_names=job.manifest.class_names,
        )
        accuracies = episode_accuracies(job.features.features[rows], episodes, device=job.device)
        summary = summarize(accuracies)
        paired.append(
            (accuracies, episodes_digest(episodes.classes, episodes.support, episodes.query))
        )
        lines.append((f"[seed {seed}] " if len(seeds) > 1 else "") + summary.line())
        per_seed.append(
            {
                "accuracy": summary.accuracy,
                "accuracy_ci95": summary.ci95,
                "accuracy_std": summary.std,
                "episodes": summary.episodes,
            }
        )
    job.timings["episodes_s"] = time.perf_counter() - start
    metrics = mean_over_seeds(per_seed, "accuracy")
    if len(seeds) > 1:
        lines.append(format_spread(metrics, "accuracy", "episode seeds"))
    params: dict[str, Any] = {
        **shape,
        "iter_num": options.iter_num,
        "pool": options.pool,
        "seeds": seeds if options.seeds else None,
    }
    extra: dict[str, Any] = {"pool_rows": len(rows)}
    if len(seeds) > 1:
        extra["per_seed"] = [{"seed": s, **m} for s, m in zip(seeds, per_seed, strict=True)]
    log_only = [f"episodes drawn from {len(rows)} rows"]
    arrays = episode_arrays(seeds, *zip(*paired, strict=True))
    outcome = Outcome("few-shot", params, seeds[0], metrics, lines, extra, log_only, arrays)
    return write_feature_record(roots, job, model, outcome)


JOB = Job("few-shot", run_few_shot, __doc__)
