"""The options of ``medtransfer compare`` (their own module so that the comparison,
:mod:`medtransfer.results.comparing`, and the command line, :mod:`medtransfer.results.commands`,
both name them without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medtransfer.jobs.flags import option, str_list


@dataclass(frozen=True)
class CompareOptions:
    """Flags of ``medtransfer compare`` (plus the data and compute flags of the jobs)."""

    models: tuple[str, ...] = option(help="a model to compare", flags=("-m", "--model"))
    protocols: tuple[str, ...] = option(
        ("few-shot", "linear", "knn"),
        "protocols to compare on, comma-separated",
        flags=("--protocol",),
        parse=str_list,
    )
    k: int = option(20, "kNN neighbours the kNN verdict uses (added to the run's k if needed)")
    n_way: int | None = option(None, "few-shot classes per episode (default: min(5, classes))")
    n_support: int | None = option(None, "few-shot support images per class (job default)")
    n_query: int | None = option(None, "few-shot query images per class (job default)")
    iter_num: int | None = option(None, "few-shot episodes (job default)")
    image_size: int | None = option(
        None, "crop size of every job (default: each job's)", flags=("-i", "--image-size")
    )
    resamples: int = option(2000, "paired bootstrap resamples (linear, kNN)")
    alpha: float = option(0.05, "level of the paired tests after Holm's correction")
    seed: int = option(0, "seed of the paired bootstrap")
    rerun: bool = option(False, "run every job again instead of reusing matching records")
    settings: dict[str, Any] = option(
        {}, "data and compute flags given, handed to each job", cli=False
    )
