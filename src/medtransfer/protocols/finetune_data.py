"""Data side of fine-tuning: splits, seeded augmentation, and a resumable batch order.

The job supplies how an item is decoded (``ImageSplit.loader``) and the evaluation geometry
(``FinetuneData.eval_transform``); this module adds the training augmentation.

Nothing here reads the global RNG (the original, docs/original-study.md#finetune, used
``RandomResizedCrop`` and shuffling samplers on the global and worker RNGs):

* the order of epoch ``e`` is ``torch.randperm`` from a ``torch.Generator`` seeded by
  ``(seed, e)``;
* the crop and flip of the sample drawn at optimiser step ``s`` with index ``i`` come
  from a generator seeded by ``(seed, s, i)``.

So the batch of any step is a pure function of ``(seed, step)``: a run resumed at step
``k`` draws exactly the crops an uninterrupted run draws, whatever the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from medtransfer.errors import ProtocolError
from medtransfer.fsutil import sha256_json

__all__ = [
    "CROP_RATIO",
    "CROP_SCALE",
    "BatchOrder",
    "EvalImages",
    "FinetuneData",
    "ImageSplit",
    "ImageTransform",
    "TrainImages",
    "augment_image",
    "crop_min_side",
    "derive_seed",
    "random_resized_crop_params",
]

CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)

#: An RGB image -> a (3, S, S) float32 tensor in [0, 1] (no normalisation: the backbone
#: normalises inside).
ImageTransform = Callable[[Image.Image], torch.Tensor]

_ORDER_TAG = 1  # seed-derivation tags keep the two streams apart
_AUGMENT_TAG = 2


def crop_min_side(
    image_size: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> int:
    """The shorter side (px) an image needs so that the smallest random resized crop still
    spans ``image_size`` pixels and is never enlarged.

    A crop covers at least ``scale[0]`` of the image's area ``A`` with an aspect ratio in
    ``ratio``, so its shorter side is at least ``sqrt(scale[0] * min(ratio[0], 1 /
    ratio[1]) * A)``, and ``A >= S^2`` for an image whose shorter side is ``S``: 915 px for
    224-px crops at the original's scale (0.08, 1) and ratio (3/4, 4/3). A pre-resized copy
    smaller than that changes what fine-tuning trains on (a 256-px copy gives ~63-px crops,
    enlarged 3.5x, where the original cropped hundreds of pixels from the full image).
    """
    return math.ceil(image_size / math.sqrt(scale[0] * min(ratio[0], 1 / ratio[1])))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every (non-negative int) part, via numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@dataclass(frozen=True)
class ImageSplit:
    """Items of one split: ``paths`` (N,), int ``labels`` (N,), and ``loader``, which
    decodes one item path to an RGB image."""

    paths: list[Path]
    labels: list[int]
    loader: Callable[[Path], Image.Image] = field(compare=False)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ProtocolError(
                f"A split has {len(self.paths)} images but {len(self.labels)} labels; "
                "give one label per image."
            )

    def __len__(self) -> int:
        return len(self.paths)

    def concat(self, other: ImageSplit) -> ImageSplit:
        """This split followed by ``other`` (train + val = the original's trainval)."""
        return ImageSplit(
            list(self.paths) + list(other.paths),
            list(self.labels) + list(other.labels),
            self.loader,
        )

    def fingerprint(self) -> str:
        """sha256 of the paths and labels, to refuse resuming on different data."""
        return sha256_json([[str(p) for p in self.paths], [int(y) for y in self.labels]])


@dataclass(frozen=True)
class FinetuneData:
    """The three splits, the number of classes C (labels are ints in [0, C)) and the
    evaluation geometry: ``eval_transform(S)`` is the :data:`ImageTransform` to size S of
    validation and test images (and of training images without augmentation)."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    n_classes: int
    eval_transform: Callable[[int], ImageTransform]

    def training_split(self, early_stopping: bool) -> ImageSplit:
        """``train`` with early stopping, else ``train + val`` (the original's trainval)."""
        return self.train if early_stopping else self.train.concat(self.val)


# --------------------------------------------------------------------------- augmentation


def random_resized_crop_params(
    width: int,
    height: int,
    generator: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` drawing from ``generator``.

    Returns ``(top, left, h, w)`` of the crop box: ten tries at an area fraction in
    ``scale`` and a log-uniform aspect ratio in ``ratio``, then a central fallback.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator)
        aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=generator).item())
        w = round(math.sqrt(target_area.item() * aspect))
        h = round(math.sqrt(target_area.item() / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment_image(image: Image.Image, size: int, seed: int) -> torch.Tensor:
    """RandomResizedCrop(size, bicubic) + RandomHorizontalFlip, seeded; RGB PIL -> (3, size,
    size) float32 in [0, 1] (no normalisation: the backbone normalises inside)."""
    generator = torch.Generator().manual_seed(seed)
    top, left, h, w = random_resized_crop_params(image.width, image.height, generator)
    crop = TF.resized_crop(image, top, left, h, w, [size, size], InterpolationMode.BICUBIC)
    if torch.rand(1, generator=generator).item() < 0.5:
        crop = TF.hflip(crop)
    return TF.to_tensor(crop)


# --------------------------------------------------------------------------- datasets


class TrainImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Training items keyed by ``(index, sample_seed)``.

    item -> (image (3, S, S) float32 in [0, 1], label). With ``augment`` the image is the
    seeded random crop and flip of :func:`augment_image`; otherwise ``eval_transform``.
    """

    def __init__(
        self, split: ImageSplit, image_size: int, augment: bool, eval_transform: ImageTransform
    ) -> None:
        self.split = split
        self.image_size = image_size
        self.augment = augment
        self.eval_transform = eval_transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, sample_seed = key
        image = self.split.loader(self.split.paths[index])
        if self.augment:
            tensor = augment_image(image, self.image_size, sample_seed)
        else:
            tensor = self.eval_transform(image)
        return tensor, int(self.split.labels[index])


class EvalImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """item i -> (``transform`` of image i, (3, S, S) in [0, 1], label)."""

    def __init__(self, split: ImageSplit, transform: ImageTransform) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.split.loader(self.split.paths[index])
        return self.transform(image), int(self.split.labels[index])


# --------------------------------------------------------------------------- batch order


@dataclass(frozen=True)
class BatchOrder:
    """Which samples each optimiser step sees, as a pure function of ``(seed, step)``.

    Epoch ``e`` is a seeded permutation of ``range(n)`` cut into ``ceil(n / batch_size)``
    batches (the last one may be short, as the original's ``drop_last=False``); step ``s``
    (1-based) uses global batch ``s - 1``.
    """

    n: int
    batch_size: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch offset within the epoch) of the batch used at 1-based ``step``."""
        return divmod(step - 1, self.batches_per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``: (n,) int64."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _ORDER_TAG, epoch))
        return torch.randperm(self.n, generator=generator)

    def epoch_keys(self, epoch: int, first_step: int) -> list[list[tuple[int, int]]]:
        """The batches of ``epoch`` from the one used at ``first_step`` on.

        Each batch is a list of ``(index, sample_seed)`` keys for :class:`TrainImages`.
        """
        order = self.permutation(epoch).tolist()
        start_epoch, offset = self.position(first_step)
        if start_epoch != epoch:
            raise ValueError(f"step {first_step} is not in epoch {epoch}")
        batches = []
        for b in range(offset, self.batches_per_epoch):
            step = epoch * self.batches_per_epoch + b + 1
            chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
            batches.append([(i, derive_seed(self.seed, _AUGMENT_TAG, step, i)) for i in chunk])
        return batches

    def iterate(
        self, dataset: TrainImages, first_step: int, workers: int, pin_memory: bool = False
    ) -> Generator[tuple[int, torch.Tensor, torch.Tensor], None, None]:
        """Endless ``(step, images (B, 3, S, S), labels (B,) int64)`` from ``first_step`` on,
        loading each epoch's remaining batches through a DataLoader."""
        step = first_step
        while True:
            epoch, _ = self.position(step)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=self.epoch_keys(epoch, step),
                num_workers=workers,
                pin_memory=pin_memory,
                generator=torch.Generator(),  # its base-seed draw stays off the global RNG
            )
            for images, labels in loader:
                yield step, images, labels.long()
                step += 1
