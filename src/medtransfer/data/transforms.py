"""Geometric preprocessing: decoded image -> float tensor in [0, 1].

Input normalisation (ImageNet statistics, histogram equalisation, ...) is NOT done here:
each backbone applies its own inside its forward pass, so no caller can skip or double it.

Two resize geometries exist because the original used both (docs/original-study.md#preprocessing):

``square``
    ``Resize([int(1.15 S), int(1.15 S)])`` (bilinear, aspect ratio not kept), then
    ``CenterCrop(S)``: the original's few-shot pipeline for small datasets.
``shorter``
    ``Resize(S)`` on the shorter side (bicubic, aspect kept), then ``CenterCrop(S)``: the
    original's linear / fine-tune pipeline and its few-shot cache for large datasets.
``ratio``
    ``Resize(round(S * 256 / 224))`` on the shorter side (bilinear, aspect kept), then
    ``CenterCrop(S)``: the ImageNet evaluation geometry (256 then 224), which the original's
    invariance script used for its clean images (docs/original-study.md#invariance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from medtransfer.data.images import load_image
from medtransfer.errors import ConfigError

RESIZE_MODES = ("square", "shorter", "ratio")
#: ``ratio``: the shorter side is ``round(S * RATIO_SIDE / RATIO_CROP)`` before the crop.
RATIO_SIDE, RATIO_CROP = 256, 224


@dataclass(frozen=True)
class Preprocessing:
    """Resize geometry and crop size ``image_size`` (S)."""

    image_size: int = 224
    resize: str = "square"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"Unknown resize mode {self.resize!r}; use one of {RESIZE_MODES}.")
        if self.image_size < 8:
            raise ConfigError(f"--image-size {self.image_size} is too small (minimum 8).")

    def resize_side(self) -> int:
        """The shorter side the image is resized to before cropping."""
        if self.resize == "square":
            return int(self.image_size * 1.15)
        if self.resize == "ratio":
            return round(self.image_size * RATIO_SIDE / RATIO_CROP)
        return self.image_size

    def describe(self) -> dict[str, object]:
        """Every parameter, for records and cache keys."""
        return {"version": 1, **asdict(self)}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> tensor (3, S, S) float32 in [0, 1]."""
        size = self.image_size
        if self.resize == "square":
            side = self.resize_side()
            image = TF.resize(image, [side, side], interpolation=InterpolationMode.BILINEAR)
        elif self.resize == "ratio":
            side = self.resize_side()
            image = TF.resize(image, side, interpolation=InterpolationMode.BILINEAR)
        else:
            image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
        return TF.to_tensor(TF.center_crop(image, [size, size]))


class ImageFiles(torch.utils.data.Dataset[torch.Tensor]):
    """Decoded, preprocessed images of a list of items; item i is (3, S, S) float32.

    ``loader`` decodes one item path to an RGB image (a dataset's own loader, e.g. a CT
    volume's middle slice; image files by default).
    """

    def __init__(
        self,
        paths: list[Path],
        preprocessing: Preprocessing,
        loader: Callable[[Path], Image.Image] = load_image,
    ) -> None:
        self.paths = paths
        self.preprocessing = preprocessing
        self.loader = loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocessing(self.loader(self.paths[index]))
