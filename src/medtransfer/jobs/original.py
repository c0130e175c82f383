"""What the original study did where that depends on the protocol, the dataset or the model.

``--preset original`` sets most options to fixed values (each job's ``Job.presets``); the
values below are the ones it sets to ``"original"``, which a job resolves once it knows
the dataset and the model (docs/original-study.md#presets):

* ``--pool original`` (few-shot): for chexpert, chestx and diabetic_retinopathy, the first
  :data:`CACHED_POOL_ROWS` images the original's cache script kept (its train split in
  its own order, docs/original-study.md#defect-e6); every image elsewhere;
* ``--n-way original`` (few-shot): the published run's ways for the dataset;
* ``--uncertain original``: CheXpert's uncertain labels as the original's protocol saw
  them (positive in few-shot and ``finetune_auc.py``, negative in linear and fine-tuning,
  docs/original-study.md#labels);
* ``--norm original``: the input normalisation the original's runner fed the model in this
  protocol (docs/original-study.md#normalisation).

This module imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medtransfer.errors import ConfigError

if TYPE_CHECKING:
    from medtransfer.data.manifest import Manifest

ORIGINAL = "original"

#: Datasets whose few-shot episodes the original drew from a cache of the first images of
#: its walk over train then test; STOIC was cached too, but all its 2,000 images fit.
CACHED_POOL_DATASETS: tuple[str, ...] = ("chexpert", "chestx", "diabetic_retinopathy")
#: ``if i > 10000: break`` keeps 10,001 images (docs/original-study.md#defect-e6).
CACHED_POOL_ROWS = 10_001

#: The published few-shot runs' ``--n-way`` per dataset (docs/original-study.md#few-shot).
FEW_SHOT_N_WAY: dict[str, int] = {
    "bach": 2,
    "chexpert": 2,
    "ichallenge_amd": 2,
    "ichallenge_pm": 2,
    "montgomerycxr": 2,
    "shenzhencxr": 2,
    "stoic": 2,
    "chestx": 5,
    "diabetic_retinopathy": 5,
    "cifar10": 5,
}

#: CheXpert's uncertain labels per protocol (``finetune-auc``: ``finetune --metric auc``).
UNCERTAIN: dict[str, str] = {
    "few-shot": "positive",
    "linear": "negative",
    "knn": "negative",  # the preset gives kNN the linear probe's features and labels
    "finetune": "negative",
    "finetune-auc": "positive",
    # the analyses use no label (the original's invariance drew uncertain ones at random)
    "saliency": "positive",
    "invariance": "positive",
    "reconstruction": "positive",
}

#: What every preset sets: the original read its image files (no pre-resized copies),
#: computed in float32, at 224 px.
EVERY_RUN: dict[str, object] = {"use_prepared": False, "precision": "fp32", "image_size": 224}

#: The original linear probe's data, labels and features: the linear preset's, and the kNN
#: preset's in full (the original had no kNN; its numbers then sit beside the linear ones).
LINEAR_FEATURES: dict[str, object] = {
    **EVERY_RUN,
    "split_policy": "original",
    "no_norm": True,
    "norm": ORIGINAL,
    "uncertain": ORIGINAL,
}

#: Protocols whose runner lines passed ``--no-norm`` to every model, and the models that got
#: it in the other protocols (docs/original-study.md#normalisation).
NO_NORM_PROTOCOLS: tuple[str, ...] = ("linear", "knn")
NO_NORM_MODELS: dict[str, tuple[str, ...]] = {
    "few-shot": ("simclr-v1",),
    "invariance": ("simclr-v1",),  # synthetic and multi-view runner lines alike
}


def few_shot_n_way(dataset: str) -> int:
    """The published few-shot run's ways for ``dataset`` (a catalog name)."""
    try:
        return FEW_SHOT_N_WAY[dataset]
    except KeyError:
        raise ConfigError(
            f"--n-way original: the original ran no few-shot on {dataset}; give --n-way N."
        ) from None


def pool_rows(manifest: Manifest, pool: str) -> tuple[np.ndarray, str]:
    """Rows episodes are drawn from (n,) and a sentence saying which.

    ``pool``: ``all``, ``train``, ``test`` or ``original`` (module docstring). The
    original's head of a cached dataset needs the original's split, which fixes the order
    the original walked the rows in.
    """
    if pool == ORIGINAL and manifest.dataset in CACHED_POOL_DATASETS:
        if manifest.original_position is None:
            raise ConfigError(
                f"--pool original on {manifest.dataset} is the first {CACHED_POOL_ROWS:,} "
                "images of the original's train split in its order, which needs "
                "--split-policy original (or give --pool all|train|test)."
            )
        rows = np.flatnonzero(manifest.original_position < CACHED_POOL_ROWS)
        return rows, (
            f"the first {len(rows):,} images of the original's walk over its train then test "
            f"split (its few-shot cache kept {CACHED_POOL_ROWS:,}; docs/original-study.md"
            "#defect-e6)"
        )
    if pool in (ORIGINAL, "all"):
        what = "as the original" if pool == ORIGINAL else "train, val and test, as the original"
        return manifest.select("all"), f"every image ({what})"
    rows = manifest.select(pool)
    return rows, f"the {pool} split only ({len(rows):,} images; the original pooled every image)"


def uncertain_for(protocol: str) -> str:
    """CheXpert's uncertain-label policy of the original's ``protocol``."""
    return UNCERTAIN[protocol]


def normalization_for(model: str, expected: str, protocol: str) -> str:
    """The normalisation the original's runner fed ``model`` (a catalog name whose weights
    expect ``expected``) in ``protocol``: histogram for the histogram models whatever the
    flags (docs/original-study.md#defect-e3); otherwise ImageNet statistics, or raw [0, 1]
    pixels where the runner passed ``--no-norm``."""
    if expected == "histogram":
        return "histogram"
    if protocol in NO_NORM_PROTOCOLS or model in NO_NORM_MODELS.get(protocol, ()):
        return "none"
    return "imagenet"
