"""Prototypical-network few-shot evaluation over cached features.

Few-shot evaluation as in the original study (prototypical networks, squared Euclidean
distance to class means), over features extracted once. Prints 'Test Acc = X% +- Y%' (the
mean episode accuracy and the 95% interval half-width over episodes: it reflects episode
resampling only, not the choice of images or patients) and writes a record. --preset
original sets what the published runs used (docs/original-study.md#presets)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import ProtocolError
from medtransfer.jobs.base import Headline, Job, JobResult
from medtransfer.jobs.flags import image_size_option, int_list, option, or_original
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.original import EVERY_RUN, ORIGINAL, few_shot_n_way, pool_rows

if TYPE_CHECKING:
    import numpy as np

    from medtransfer.data.manifest import Manifest


@dataclass(frozen=True)
class FewShotOptions:
    """The original's few-shot flags (docs/original-study.md#few-shot) plus the episode pool."""

    n_way: int | str = option(
        5,
        "classes per episode, or original (the published run's: 2, or 5 for chestx, "
        "diabetic_retinopathy and cifar10)",
        parse=or_original(int),
    )
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
        "which images episodes draw from: all (train+val+test, as the original), train, "
        "test, or original (as the original: all, but for chexpert, chestx and "
        "diabetic_retinopathy the first 10,001 images of its train split, which its cache "
        "kept; needs --split-policy original)",
        choices=("all", "train", "test", ORIGINAL),
    )
    seed: int = option(0, "episode seed")
    seeds: tuple[int, ...] | None = option(
        None, "comma-separated episode seeds: one run each, with mean and spread", parse=int_list
    )


def episode_plan(manifest: Manifest, options: FewShotOptions) -> tuple[np.ndarray, int, str]:
    """The pool's rows (n,), the ways and the pool's description, checked against the
    manifest before any image is read: ``--n-way`` above the pool's classes, or a class
    with fewer than ``n_support + n_query`` images, is an error naming them."""
    import numpy as np

    rows, described = pool_rows(manifest, options.pool)
    n_way = few_shot_n_way(manifest.dataset) if options.n_way == ORIGINAL else int(options.n_way)
    if min(n_way, options.n_support, options.n_query, options.iter_num) < 1:
        raise ProtocolError("--n-way, --n-support, --n-query and --iter-num must all be >= 1.")
    counts = np.bincount(manifest.labels[rows], minlength=len(manifest.class_names))
    present = np.flatnonzero(counts)
    if len(present) < n_way:
        raise ProtocolError(
            f"--n-way {n_way} needs {n_way} classes but the pool ({described}) has "
            f"{len(present)}; lower --n-way."
        )
    per_episode = options.n_support + options.n_query
    short = [(manifest.class_names[c], int(counts[c])) for c in present if counts[c] < per_episode]
    if short:
        names = ", ".join(f"{name}: {n}" for name, n in short)
        raise ProtocolError(
            f"Each episode needs n_support + n_query = {per_episode} images of a class, but "
            f"some classes of the pool have fewer ({names}). Lower --n-support/--n-query, "
            "widen --pool or add images."
        )
    return rows, n_way, described


def run_few_shot(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: FewShotOptions,
    run: RunOptions,
) -> JobResult:
    """Prototypical-network few-shot evaluation; writes and returns its record.

    Prints ``Test Acc = X% +- Y%`` per episode seed (and the spread over several). The
    episode plan (pool, ways, images per class) is checked before any feature is extracted.
    """
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.common import (
        Outcome,
        StoreRequest,
        open_job_data,
        prepare_features,
        write_feature_record,
    )
    from medtransfer.jobs.policies import resize_policy
    from medtransfer.protocols.fewshot import episode_accuracies, sample_episodes, summarize
    from medtransfer.protocols.stats import format_spread, mean_over_seeds
    from medtransfer.results.sidecar import episode_arrays, episodes_digest

    opened = open_job_data(roots, data, model, "few-shot")
    rows, n_way, described = episode_plan(opened.manifest, options)
    resize = options.resize or opened.spec.few_shot_resize
    preprocessing = Preprocessing(image_size=options.image_size, resize=resize)
    job = prepare_features(roots, StoreRequest("few-shot", opened, model, preprocessing, run))
    start = time.perf_counter()
    labels = job.features.labels[rows]
    seeds = list(options.seeds) if options.seeds else [options.seed]
    per_seed: list[dict[str, Any]] = []
    lines = []
    paired: list[tuple[Any, str]] = []  # per seed: episode accuracies, episodes digest
    shape = {"n_way": n_way, "n_support": options.n_support, "n_query": options.n_query}
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
    extra: dict[str, Any] = {
        "pool_rows": len(rows),
        "pool_patients": _patients(opened.manifest, rows),
    }
    if len(seeds) > 1:
        extra["per_seed"] = [{"seed": s, **m} for s, m in zip(seeds, per_seed, strict=True)]
    log_only = [f"episodes drawn from {len(rows)} rows"]
    policies = {
        "resize": resize_policy(
            opened.spec,
            options.image_size,
            resize,
            preprocessing.resize_side(),
            protocol="few-shot",
        ),
        "pool": f"episodes drawn from {described}: {len(rows):,} images"
        + _sources(opened.manifest, rows),
        "interval": "the ± is 1.96 std / sqrt(episodes): episode resampling only, not the "
        "choice of images or patients",
    }
    if len(seeds) == 1:
        interval = f"± {float(per_seed[0]['accuracy_ci95']):.2f} (95%, episodes)"
    else:
        spread = metrics["accuracy_spread"]
        interval = f"± {spread['std']:.2f} (std over {spread['n']} episode seeds)"  # type: ignore[index]
    headline = Headline("accuracy", float(metrics["accuracy"]), interval)  # type: ignore[arg-type]
    arrays = episode_arrays(seeds, *zip(*paired, strict=True))
    outcome = Outcome(
        "few-shot", params, seeds[0], metrics, lines, extra, log_only, arrays,
        policies=policies, headlines=(headline,),
    )  # fmt: skip
    return write_feature_record(roots, job, model, outcome)


def _patients(manifest: Any, rows: Any) -> int | None:
    """How many patients the pool ``rows`` come from; None where the data has no patient
    ids (each image is then its own patient and the count says nothing more)."""
    patients = manifest.table["patient"].to_numpy()[rows]
    known = [p for p in patients if p]
    return len(set(known)) if known and len(known) == len(patients) else None


def _sources(manifest: Any, rows: Any) -> str:
    """`` from N patients`` where the pool's patients are known and fewer than its images
    (the independent sources behind the interval), else ``""``."""
    count = _patients(manifest, rows)
    return f" from {count:,} patients" if count is not None and count < len(rows) else ""


JOB = Job(
    "few-shot",
    run_few_shot,
    __doc__,
    presets={
        "original": {
            **EVERY_RUN,
            "split_policy": "original",
            "pool": ORIGINAL,
            "n_way": ORIGINAL,
            "n_support": 20,
            "n_query": 15,
            "iter_num": 600,
            "uncertain": ORIGINAL,
            "pm_positive": "P",
            "stoic_orientation": "original",
            "norm": ORIGINAL,
        }
    },
)
