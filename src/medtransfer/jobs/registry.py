"""Every job the command line offers, in the order ``medtransfer --help`` lists them."""

from __future__ import annotations

from medtransfer.jobs import fewshot, finetune, knn, linear, perceptual_distance, reconstruct
from medtransfer.jobs.base import Job

JOBS: tuple[Job, ...] = (
    fewshot.JOB,
    linear.JOB,
    knn.JOB,
    finetune.JOB,
    reconstruct.JOB,
    perceptual_distance.JOB,
)


def get_job(name: str) -> Job:
    """The registered job called ``name`` (a sub-command name)."""
    for job in JOBS:
        if job.name == name:
            return job
    raise KeyError(f"no job named {name!r}; jobs: {', '.join(job.name for job in JOBS)}")
