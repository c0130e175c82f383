"""Backbones beyond the catalog: ``timm:NAME`` and ``torchvision:NAME``.

For users who bring newer architectures (DINOv2, ViTs, ConvNeXts, ...). The pretrained
weights are fetched through medtransfer's own downloader (resumed, checksummed, into the
cache; :class:`medtransfer.models.weights.ExternalFile`), never through a hub client at run
time, and loaded strictly. Pooling follows the family: timm's ``num_classes=0`` head
(global average pool for CNNs, class token or the model's own pooling for transformers);
for torchvision the final classifier ``Linear`` is replaced by the identity, which leaves
each family's own pooling in place. The input normalisation is the mean/std the weights
were trained with (from their metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from torch import nn

from medtransfer.errors import ModelError
from medtransfer.models.catalog import ModelSpec
from medtransfer.models.normalization import IMAGENET_MEAN, standardize_kind
from medtransfer.models.seeding import seeded

PREFIXES = ("timm:", "torchvision:")


def is_external(name: object) -> bool:
    """Whether ``name`` names a timm or torchvision model rather than a catalog entry."""
    return isinstance(name, str) and name.strip().lower().startswith(PREFIXES)


@dataclass(frozen=True)
class ExternalModel:
    """A ``timm:``/``torchvision:`` trunk before its weights are loaded.

    Attributes:
        spec: its catalog-style entry (``source='external'``; ``url`` None when the user
            brings the weights).
        trunk: the model with its classifier removed, in eval mode; maps normalised images
            ``(B, 3, H, W)`` to pooled features ``(B, spec.feature_dim)``.
        head_prefix: the state-dict prefix of the classifier (dropped before loading), or
            '' when the model has none.
    """

    spec: ModelSpec
    trunk: nn.Module
    head_prefix: str


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no Linear classifier to remove.")
    return linears[-1]


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def torchvision_weights(name: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(url, mean, std) of torchvision's DEFAULT weights for ``name``."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as err:
        raise ModelError(
            f"torchvision has no model {name!r} with pretrained weights; see "
            "torchvision.models.list_models() for the names."
        ) from err
    preset = weights.transforms()
    return weights.url, tuple(preset.mean), tuple(preset.std)


def timm_weights_url(pretrained_cfg: dict[str, object]) -> str:
    """Where timm's pretrained weights of a model are published (HF hub first)."""
    hub = pretrained_cfg.get("hf_hub_id")
    if hub:
        return f"https://huggingface.co/{hub}/resolve/main/model.safetensors"
    url = pretrained_cfg.get("url")
    if url:
        return str(url)
    raise ModelError("timm lists no pretrained weights for this model; pass --weights PATH.")


def cache_filename(url: str) -> tuple[str, str | None]:
    """The cache file name of the weights at ``url``, and the sha256 prefix it carries.

    Hugging Face repositories all publish ``model.safetensors``, so the file is named after
    the repository (``timm--resnet50.a1_in1k.safetensors``); torchvision-style names end in
    ``-<hex>`` with at least 8 leading hex characters of the file's sha256.
    """
    filename = url.rsplit("/", 1)[1].split("?", 1)[0]
    if "huggingface.co/" in url:
        filename = url.split("huggingface.co/", 1)[1].split("/resolve/", 1)[0].replace("/", "--")
        filename += ".safetensors"
    stem = filename.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    known = prefix if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix) else None
    return filename, known


class _Built(NamedTuple):
    trunk: nn.Module  # head already removed
    head: str  # the classifier's module name ('' if none)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    url: str  # the published weights ('' when the user brings a file)
    feature_dim: int


def _timm(model_name: str, user_weights: bool) -> _Built:
    import timm

    try:
        trunk = timm.create_model(model_name, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ModelError(f"timm has no model {model_name!r} ({err}).") from err
    cfg = dict(trunk.pretrained_cfg)
    return _Built(
        trunk,
        head=str(cfg.get("classifier") or ""),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg["std"]),
        url="" if user_weights else timm_weights_url(cfg),
        feature_dim=int(getattr(trunk, "head_hidden_size", None) or trunk.num_features),
    )


def _torchvision(model_name: str, user_weights: bool) -> _Built:
    import torchvision

    try:
        trunk = torchvision.models.get_model(model_name, weights=None)
    except ValueError as err:
        raise ModelError(f"torchvision has no model {model_name!r} ({err}).") from err
    url, mean, std = torchvision_weights(model_name)
    head, last = _last_linear(trunk)
    _replace(trunk, head, nn.Identity())
    return _Built(trunk, head, mean, std, "" if user_weights else url, last.in_features)


def build_external(name: str, *, weights: Path | None = None, seed: int = 0) -> ExternalModel:
    """The trunk of ``timm:NAME`` / ``torchvision:NAME`` (head removed), seeded by ``seed``.

    ``weights``: the user's weights file, if any (then no published weights are looked up).
    """
    family, _, model_name = name.strip().partition(":")
    family = family.lower()
    with seeded(seed):
        built = (_timm if family == "timm" else _torchvision)(model_name, weights is not None)
    url = built.url
    filename, sha256_prefix = cache_filename(url) if url else (Path(str(weights)).name, None)
    spec = ModelSpec(
        name=f"{family}:{model_name}",
        aliases=(),
        arch=f"{family}:{model_name}",
        feature_dim=built.feature_dim,
        normalization=standardize_kind(built.mean, built.std),
        source="external",
        url=url or None,
        filename=filename,
        sha256_prefix=sha256_prefix,
        method=f"{family} pretrained weights",
        pretraining_data="see the model's card",
        licence="see the model's card",
        description=f"{model_name} from {family}",
    )
    return ExternalModel(spec, built.trunk.eval(), f"{built.head}." if built.head else "")
