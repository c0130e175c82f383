"""The synthetic transforms of the invariance analysis, their parameter grids and views.

Every transform of the original (docs/original-study.md#invariance) with the same grid of
k parameter values (``linspace(a, b, n)`` includes both ends, computed in float32 as the
original did) and the same default k: 2 for ``h_flip``, ``v_flip``, ``grayscale``,
``invert``, ``equalize``; 7 for ``posterize``; 256 otherwise. Grids in pixels
(``translation``, ``resized_crop``) are fractions of the resize side R (256 for a 224 crop).

A :class:`ViewPlan` turns one decoded image into its k views, ``(k, 3, S, S)`` in [0, 1]:

``at="resized"`` (default)
    resize the shorter side to R (bilinear), apply the transform, centre-crop S: a "±16 px"
    translation moves the 256-px image by 16 px, and the identity view is exactly the clean
    image of the ``ratio`` preprocessing.
``at="full"`` (the original)
    apply the transform to the full-resolution image, then resize to R and centre-crop S;
    ``resized_crop`` returns S × S directly (docs/original-study.md#defect-e35).

``original=True`` also keeps the original's 1° shear in ``translation`` and ``scale``
(docs/original-study.md#defect-e42); otherwise their shear is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from medtransfer.analysis.elastic import elastic_deform
from medtransfer.errors import ConfigError

AT_CHOICES: tuple[str, ...] = ("resized", "full")
#: The crop the original's grids were written for, and its resize side.
REFERENCE_CROP, REFERENCE_SIDE = 224, 256


@dataclass(frozen=True)
class Context:
    """What a transform's parameters and operation depend on: the crop ``crop`` (S), the
    resize side ``side`` (R), whether the original's quirks are kept, and a random state
    for ``deform`` (one per view)."""

    crop: int
    side: int
    original: bool = False
    random_state: np.random.RandomState | None = None


Grid = Callable[[int, Context], list[Any]]
Op = Callable[[Image.Image, Any, Context], Image.Image]


@dataclass(frozen=True)
class TransformSpec:
    """One transform: its torchvision (or elastic) operation ``op``, described in
    ``describe``; its grid of parameter values for a k; the value that leaves an image
    unchanged (``identity``, or None when the grid never holds it); the rule k must follow
    (``k_rule``, for errors) and its check; ``crops``: whether the view is resized and
    centre-cropped after the operation (False for ``resized_crop``, which outputs S × S)."""

    name: str
    describe: str
    default_k: int
    grid: Grid
    op: Op
    k_rule: str
    k_ok: Callable[[int], bool]
    identity: Any = None
    crops: bool = True


def _linspace(start: float, stop: float, steps: int) -> list[float]:
    return torch.linspace(start, stop, steps).to(torch.float32).tolist()


def _square_side(k: int) -> int:
    return math.isqrt(k)


def _is_square(k: int) -> bool:
    return k >= 1 and math.isqrt(k) ** 2 == k


def _fourth_root(k: int) -> int:
    root = round(k**0.25)
    return root if root**4 == k else 0


def _translations(k: int, ctx: Context) -> list[Any]:
    m = _square_side(k)
    space = (1 - ctx.crop / ctx.side) / 2
    steps = (torch.linspace(-space, space, m + 1)[:m].to(torch.float32) * ctx.side).tolist()
    return [[a, b] for a, b in product(steps, steps)]


def _shears(k: int, ctx: Context) -> list[Any]:
    m = _square_side(k)
    steps = _linspace(-160.0, 160.0, m + 1)[:m]
    return [[a, b] for a, b in product(steps, steps)]


def _crop_boxes(k: int, ctx: Context) -> list[Any]:
    n = _fourth_root(k)
    corners = (torch.linspace(0, 0.25, n) * ctx.side).to(torch.float32).tolist()
    sizes = (torch.linspace(0.75, 0.25, n) * ctx.side).to(torch.float32).tolist()
    return [list(box) for box in product(corners, corners, sizes, sizes)]


def _deform_sigmas(k: int, ctx: Context) -> list[Any]:
    return torch.linspace(10, 50, 8).to(int).repeat(32).tolist()[:k]


def _shear_degrees(ctx: Context) -> float:
    return 1.0 if ctx.original else 0.0


def _deform(image: Image.Image, sigma: Any, ctx: Context) -> Image.Image:
    if ctx.random_state is None:
        raise ValueError("deform needs a random state in its context")
    return Image.fromarray(elastic_deform(np.asarray(image), float(sigma), ctx.random_state))


def _blur(image: Image.Image, sigma: Any, ctx: Context) -> Image.Image:
    size = 1 + 2 * (ctx.crop // 20)
    return TF.gaussian_blur(image, kernel_size=[size, size], sigma=[float(sigma)] * 2)


def _when(op: Callable[[Image.Image], Image.Image]) -> Op:
    return lambda image, apply, ctx: op(image) if apply else image


_ANY_K = "k >= 1"
_BINARY = "k = 2 (the grid is {False, True})"


def _linear(name: str, fn: Op, start: float, stop: float, identity: float) -> TransformSpec:
    return TransformSpec(
        name,
        f"adjust_{name}, factor = linspace({start:g}, {stop:g}, k)",
        256,
        lambda k, ctx: _linspace(start, stop, k),
        fn,
        _ANY_K,
        lambda k: k >= 1,
        identity,
    )


def _binary(name: str, describe: str, op: Callable[[Image.Image], Image.Image]) -> TransformSpec:
    return TransformSpec(
        name, describe, 2, lambda k, ctx: [False, True], _when(op), _BINARY, lambda k: k == 2, False
    )


def _brightness(image: Image.Image, factor: Any, ctx: Context) -> Image.Image:
    return TF.adjust_brightness(image, factor)


def _contrast(image: Image.Image, factor: Any, ctx: Context) -> Image.Image:
    return TF.adjust_contrast(image, factor)


def _saturation(image: Image.Image, factor: Any, ctx: Context) -> Image.Image:
    return TF.adjust_saturation(image, factor)


def _hue(image: Image.Image, factor: Any, ctx: Context) -> Image.Image:
    return TF.adjust_hue(image, factor)


def _sharpness(image: Image.Image, factor: Any, ctx: Context) -> Image.Image:
    return TF.adjust_sharpness(image, factor)


_TRANSFORMS: tuple[TransformSpec, ...] = (
    TransformSpec(
        "rotation",
        "rotate(angle) (nearest, no expand, black fill), angle = linspace(0, 360, k + 1)[:k]",
        256,
        lambda k, ctx: _linspace(0, 360, k + 1)[:k],
        lambda image, angle, ctx: TF.rotate(image, angle),
        _ANY_K,
        lambda k: k >= 1,
        0.0,
    ),
    TransformSpec(
        "translation",
        "affine(translate=(tx, ty)); tx, ty = linspace(-s, s, m + 1)[:m] * R, "
        "s = (1 - S / R) / 2, m = sqrt(k)",
        256,
        _translations,
        lambda image, t, ctx: TF.affine(
            image, angle=0.0, translate=list(t), scale=1.0, shear=_shear_degrees(ctx)
        ),
        "a perfect square k = m² (e.g. 16, 25, 256): the grid is m × m translations",
        _is_square,
        [0.0, 0.0],
    ),
    TransformSpec(
        "scale",
        "affine(scale), scale = linspace(0.25, 2, k)",
        256,
        lambda k, ctx: _linspace(0.25, 2.0, k),
        lambda image, s, ctx: TF.affine(
            image, angle=0.0, translate=[0, 0], scale=s, shear=_shear_degrees(ctx)
        ),
        _ANY_K,
        lambda k: k >= 1,
        1.0,
    ),
    TransformSpec(
        "shear",
        "affine(shear=(sx, sy)); sx, sy = linspace(-160, 160, m + 1)[:m] degrees, m = sqrt(k)",
        256,
        _shears,
        lambda image, s, ctx: TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=s),
        "a perfect square k = m² (e.g. 16, 25, 256): the grid is m × m shears",
        _is_square,
        [0.0, 0.0],
    ),
    TransformSpec(
        "resized_crop",
        "resized_crop(top, left, height, width, size=S) bilinear; top, left = "
        "linspace(0, 0.25, n) * R, height, width = linspace(0.75, 0.25, n) * R, n = k^(1/4)",
        256,
        _crop_boxes,
        lambda image, box, ctx: TF.resized_crop(image, *box, [ctx.crop, ctx.crop]),
        "a fourth power k = n⁴ (e.g. 16, 81, 256): the grid is every (top, left, height, "
        "width) of n values each",
        lambda k: k >= 1 and _fourth_root(k) > 0,
        None,
        crops=False,
    ),
    _binary("h_flip", "hflip", TF.hflip),
    _binary("v_flip", "vflip", TF.vflip),
    TransformSpec(
        "deform",
        "elastic deformation (albumentations 1.x ElasticTransform, approximate, alpha 1, "
        "alpha_affine 50), sigma = int(linspace(10, 50, 8)) tiled 32 times",
        256,
        _deform_sigmas,
        _deform,
        "1 <= k <= 256 (the grid has 256 values)",
        lambda k: 1 <= k <= 256,
        None,
    ),
    _binary(
        "grayscale",
        "rgb_to_grayscale(num_output_channels=3)",
        lambda image: TF.rgb_to_grayscale(image, num_output_channels=3),
    ),
    _linear("brightness", _brightness, 0.25, 5.0, 1.0),
    _linear("contrast", _contrast, 0.25, 5.0, 1.0),
    _linear("saturation", _saturation, 0.25, 5.0, 1.0),
    _linear("hue", _hue, -0.5, 0.5, 0.0),
    TransformSpec(
        "blur",
        "gaussian_blur(kernel 1 + 2 * (S // 20), sigma), sigma = linspace(1e-5, 20, k)",
        256,
        lambda k, ctx: _linspace(1e-5, 20.0, k),
        _blur,
        _ANY_K,
        lambda k: k >= 1,
        _linspace(1e-5, 20.0, 1)[0],
    ),
    _linear("sharpness", _sharpness, 1.0, 30.0, 1.0),
    _binary("invert", "invert", TF.invert),
    _binary("equalize", "equalize", TF.equalize),
    TransformSpec(
        "posterize",
        "posterize(bits), bits = 1..k",
        7,
        lambda k, ctx: list(range(1, 8))[:k],
        lambda image, bits, ctx: TF.posterize(image, int(bits)),
        "1 <= k <= 7 (the grid is bits 1..7)",
        lambda k: 1 <= k <= 7,
        None,
    ),
)

TRANSFORMS: dict[str, TransformSpec] = {spec.name: spec for spec in _TRANSFORMS}
TRANSFORM_NAMES: tuple[str, ...] = tuple(TRANSFORMS)


def get_transform(name: str) -> TransformSpec:
    """The transform called ``name``; a ConfigError listing the names otherwise."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown --transform {name!r}; use one of {', '.join(TRANSFORM_NAMES)} or all."
        ) from None


def resolve_k(name: str, k: int | None) -> int:
    """``k`` checked against the transform's grid, or its default k when None.

    Raises:
        ConfigError: a k the grid cannot honour (e.g. ``translation`` with k = 20, which
            the original answered with an IndexError, docs/original-study.md#defect-e36).
    """
    spec = get_transform(name)
    if k is None:
        return spec.default_k
    if not spec.k_ok(k):
        raise ConfigError(f"--k {k} does not fit --transform {name}: it takes {spec.k_rule}.")
    return k


def identity_index(name: str, values: Sequence[Any]) -> int | None:
    """Position of the identity parameter in ``values``, or None when the grid lacks it."""
    identity = get_transform(name).identity
    if identity is None:
        return None
    for index, value in enumerate(values):
        if value == identity:
            return index
    return None


@dataclass(frozen=True)
class ViewPlan:
    """How to turn one image into the k views of ``transform`` (module docstring).

    ``k`` is checked by :func:`resolve_k`; ``crop`` (S) and ``side`` (R) are the crop and the
    resize side; ``at`` is ``resized`` or ``full``; ``seed`` seeds ``deform`` (one random
    state per image and view).
    """

    transform: str
    k: int
    crop: int = REFERENCE_CROP
    side: int = REFERENCE_SIDE
    at: str = "resized"
    original: bool = False
    seed: int = 0
    values: list[Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.at not in AT_CHOICES:
            raise ConfigError(f"Unknown --transform-at {self.at!r}; use one of {AT_CHOICES}.")
        if self.side < self.crop:
            raise ConfigError(f"The resize side {self.side} is smaller than the crop {self.crop}.")
        spec = get_transform(self.transform)
        k = resolve_k(self.transform, self.k)
        object.__setattr__(self, "values", spec.grid(k, self._context(None)))

    def _context(self, random_state: np.random.RandomState | None) -> Context:
        return Context(self.crop, self.side, self.original, random_state)

    @property
    def identity(self) -> int | None:
        """Position of the identity parameter in :attr:`values`, or None."""
        return identity_index(self.transform, self.values)

    def describe(self) -> dict[str, Any]:
        """Every parameter of the plan, for records and cache keys."""
        spec = get_transform(self.transform)
        return {
            "transform": self.transform,
            "op": spec.describe,
            "k": self.k,
            "crop": self.crop,
            "side": self.side,
            "at": self.at,
            "original_quirks": self.original,
            "seed": self.seed,
        }

    def _state(self, image_index: int, view: int) -> np.random.RandomState:
        entropy = np.random.SeedSequence([self.seed, image_index, view]).generate_state(1)[0]
        return np.random.RandomState(int(entropy))

    def views(self, image: Image.Image, image_index: int = 0) -> Tensor:
        """The k views of ``image`` (RGB, any size): ``(k, 3, S, S)`` float32 in [0, 1].

        ``image_index`` tells images apart for ``deform``'s random states."""
        spec = get_transform(self.transform)
        base = image
        if self.at == "resized":
            base = TF.resize(image, self.side, interpolation=InterpolationMode.BILINEAR)
        out = []
        for view, value in enumerate(self.values):
            state = self._state(image_index, view) if spec.name == "deform" else None
            changed = spec.op(base, value, self._context(state))
            if spec.crops:
                if self.at == "full":
                    changed = TF.resize(
                        changed, self.side, interpolation=InterpolationMode.BILINEAR
                    )
                changed = TF.center_crop(changed, [self.crop, self.crop])
            out.append(TF.pil_to_tensor(changed).to(torch.float32) / 255.0)
        return torch.stack(out)
