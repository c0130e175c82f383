"""The invariance job's options and the settings ``--preset original`` gives them (their own
module so that the job's record writer, :mod:`medtransfer.jobs.invariance_record`, can
name them without importing the job)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medtransfer.jobs.flags import bootstrap_option, image_size_option, option
from medtransfer.jobs.original import EVERY_RUN, ORIGINAL

_NAMES = (
    "rotation",
    "translation",
    "scale",
    "shear",
    "resized_crop",
    "h_flip",
    "v_flip",
    "deform",
    "grayscale",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "blur",
    "sharpness",
    "invert",
    "equalize",
    "posterize",
)


@dataclass(frozen=True)
class InvarianceOptions:
    """Invariance flags: the transform and its k (or the multi-view pairs), which images,
    the covariance estimator, and the switches back to the original's behaviour."""

    transform: str = option(
        "rotation", "the transform to measure, or all (one record each)", choices=(*_NAMES, "all")
    )
    k: int | None = option(
        None,
        "parameter values per transform (default: 2 for h_flip, v_flip, grayscale, invert, "
        "equalize; 7 for posterize; 256 otherwise; translation and shear need a square, "
        "resized_crop a fourth power)",
    )
    multiview: bool = option(
        False,
        "compare two views of one subject instead of a transform: CheXpert lateral vs "
        "frontal of a study, EyePACS left vs right eye of a patient with the same grade",
    )
    images: int = option(100, "images (pairs with --multiview) drawn; 0: every one")
    seed: int = option(0, "seed of the image draw, the deform transform and the bootstrap")
    cov: str = option(
        "ledoit-wolf",
        "covariance estimator: ledoit-wolf, oas, or sample (+1e-6 I, the original)",
        choices=("ledoit-wolf", "oas", "sample"),
    )
    image_size: int = image_size_option()
    transform_at: str = option(
        "resized",
        "resized: resize the shorter side to round(S * 256 / 224) and then transform (a "
        "16-px translation moves the 256-px image by 16 px); full: transform the "
        "full-resolution image first with the original's operations (its 1-degree shear in "
        "translation and scale), as the original",
        choices=("resized", "full"),
    )
    keep_identity: bool = option(
        False, "average the identity view (angle 0, no flip, ...) in, as the original did"
    )
    sampling: str = option(
        "seeded",
        "seeded: distinct images from a generator seeded with --seed, statistics over every "
        "image; original: np.random.seed(0) draws with replacement and the original's "
        "covariance subsample",
        choices=("seeded", "original"),
    )
    batchnorm: str = option(
        "eval",
        "eval: running statistics; original: train-mode statistics in the original's "
        "batches (the clean image alone, the k views together, the covariance images in "
        "batches of --batch-size)",
        choices=("eval", "original"),
    )
    view_norm: str = option(
        "model",
        "model: views normalised as the model's clean images; original: ImageNet statistics "
        "(none under --no-norm) for the views whatever the model, as the original",
        choices=("model", "original"),
    )
    numerics: str = option(
        "exact",
        "exact: float64 scores from the estimator's spectrum; original: the original's "
        "float32 Cholesky factor of the precision matrix (needs --cov sample)",
        choices=("exact", "original"),
    )
    bootstrap: int = bootstrap_option()


#: What the original's invariance scripts did (docs/original-study.md#invariance), with the
#: normalisation its runner fed each model (SimCLR-v1: --no-norm).
PRESET: dict[str, Any] = {
    **EVERY_RUN,
    "norm": ORIGINAL,
    "images": 100,
    "transform_at": "full",
    "keep_identity": True,
    "sampling": "original",
    "batchnorm": "original",
    "view_norm": "original",
    "cov": "sample",
    "numerics": "original",
    "split_policy": "original",
    "batch_size": 256,
}
