"""The architecture registry: what the toolkit knows about each network it builds.

An :class:`ArchSpec` holds, for one architecture, everything that does not depend on the
weights: how to build the trunk (library model, ``weights=None``, classifier head replaced
by the identity), the width of its pooled features, the prefix of the classifier in a
state dict (dropped before loading), the renaming of legacy key names, and the
intermediate layers it exposes by name (read with
:func:`medtransfer.models.intermediate.intermediate_outputs`).

A new architecture is one entry in :data:`ARCHS`; the catalog, the loader and the
checkpoint converters read everything from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from medtransfer.errors import ModelError


@dataclass(frozen=True)
class LayerTap:
    """Where a named intermediate output is read in a trunk.

    Attributes:
        module: the dotted path of the submodule whose output is read (``''``: the trunk
            itself, i.e. the pooled features).
        then: a function the trunk's forward applies to that output right away (without a
            module of its own, e.g. DenseNet's functional ReLU); the tap reads the result.
            It must be idempotent, because the forward applies it once more.
    """

    module: str
    then: Callable[[Tensor], Tensor] | None = None


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    Attributes:
        name: the registry key (what ``ModelSpec.arch`` holds).
        label: the human name used in catalog descriptions (``ResNet-50``).
        feature_dim: width of the trunk's output ``(B, feature_dim)``.
        classifier_prefix: the state-dict prefix of the library's classifier head
            (``fc.``); it is dropped from every state dict before loading.
        build: makes the trunk: the library model with ``weights=None`` and the head
            replaced by ``nn.Identity`` (no parameters). Its initialisation draws from the
            global torch RNG. forward: normalised images ``(B, 3, H, W)`` ->
            ``(B, feature_dim)``.
        layers: the intermediate outputs it exposes, in forward order: name -> tap.
            Spatial layers give ``(B, C, h, w)``; ``pooled`` gives ``(B, feature_dim)``.
        remap_keys: renames legacy state-dict keys onto the library's current ones, or
            None when nothing needs renaming.
        converted: whether the checkpoint converters (``models/convert/``) produce
            weights for it.
        aliases: other names of some layers -> their name in ``layers``: the names the
            original study's reconstruction code used
            (docs/original-study.md#reconstruction), e.g. DenseNet ``layer4`` for
            ``features.denseblock4``.
    """

    name: str
    label: str
    feature_dim: int
    classifier_prefix: str
    build: Callable[[], nn.Module]
    layers: Mapping[str, LayerTap] = field(repr=False)
    remap_keys: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None
    converted: bool = True
    aliases: Mapping[str, str] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- builders


def _torchvision_trunk(name: str, head: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        setattr(model, head, nn.Identity())
        return model

    return build


def timm_model(name: str, num_classes: int) -> nn.Module:
    """timm's ``name`` with ``pretrained=False`` (``num_classes=0``: head removed)."""
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _timm_trunk(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return timm_model(name, num_classes=0)

    return build


# --------------------------------------------------------------------------- key renaming


_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def remap_legacy_densenet_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's legacy DenseNet keys, e.g. ``...denselayer1.norm.1.weight`` ->
    ``...denselayer1.norm1.weight`` and ``...conv.2.weight`` -> ``...conv2.weight``."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[f"{match[1]}{match[2]}.{match[3]}" if match else key] = value
    return renamed


# --------------------------------------------------------------------------- layers


def _taps(*modules: str) -> dict[str, LayerTap]:
    """Layers named after the submodules they read."""
    return {module: LayerTap(module) for module in modules}


_POOLED = {"pooled": LayerTap("")}
_RESNET_LAYERS = {
    **_taps("conv1", "bn1", "relu", "maxpool"),
    **_taps("layer1", "layer2", "layer3", "layer4", "avgpool"),
    **_POOLED,
}
_DENSENET_LAYERS = {
    **_taps("features.conv0", "features.norm0", "features.relu0", "features.pool0"),
    **_taps("features.denseblock1", "features.transition1"),
    **_taps("features.denseblock2", "features.transition2"),
    **_taps("features.denseblock3", "features.transition3"),
    **_taps("features.denseblock4", "features.norm5"),
    # The map the trunk pools: DenseNet's forward applies F.relu to features.norm5.
    "relu": LayerTap("features.norm5", then=F.relu),
    **_POOLED,
}
# The original study's names (its reconstruction backbones) for the layers above.
_RESNET_ALIASES = {"relu1": "relu", "fc": "pooled"}
_DENSENET_ALIASES = {
    **{name: f"features.{name}" for name in ("conv0", "norm0", "relu0", "pool0", "norm5")},
    **{f"layer{i}": f"features.denseblock{i}" for i in range(1, 5)},
    **{f"transition{i}": f"features.transition{i}" for i in range(1, 4)},
    "relu1": "relu",
    "fc": "pooled",
}
_EFFICIENTNET_LAYERS = {
    **_taps("conv_stem", "bn1"),
    **_taps(*(f"blocks.{stage}" for stage in range(7))),
    **_taps("conv_head", "bn2"),
    **_POOLED,
}


# --------------------------------------------------------------------------- registry


def _resnet(name: str, label: str, feature_dim: int) -> ArchSpec:
    return ArchSpec(
        name=name,
        label=label,
        feature_dim=feature_dim,
        classifier_prefix="fc.",
        build=_torchvision_trunk(name, "fc"),
        layers=_RESNET_LAYERS,
        aliases=_RESNET_ALIASES,
    )


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        _resnet("resnet50", "ResNet-50", 2048),
        _resnet("resnet18", "ResNet-18", 512),
        ArchSpec(
            name="densenet121",
            label="DenseNet-121",
            feature_dim=1024,
            classifier_prefix="classifier.",
            build=_torchvision_trunk("densenet121", "classifier"),
            layers=_DENSENET_LAYERS,
            remap_keys=remap_legacy_densenet_keys,
            aliases=_DENSENET_ALIASES,
        ),
        ArchSpec(
            name="tf_efficientnet_lite0",
            label="EfficientNet-Lite0",
            feature_dim=1280,
            classifier_prefix="classifier.",
            build=_timm_trunk("tf_efficientnet_lite0"),
            layers=_EFFICIENTNET_LAYERS,
            converted=False,
        ),
    )
}


def get_arch(name: str) -> ArchSpec:
    """The registry entry of the architecture ``name``."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ModelError(f"Unknown architecture {name!r}; use one of {', '.join(ARCHS)}.") from None


def converted_archs() -> tuple[str, ...]:
    """The architectures the checkpoint converters produce, in registry order."""
    return tuple(name for name, spec in ARCHS.items() if spec.converted)


def build_trunk(arch: str) -> nn.Module:
    """The trunk of ``arch`` (see :attr:`ArchSpec.build`); draws from the global torch RNG.

    forward: ``(B, 3, H, W)`` normalised images -> pooled features ``(B, feature_dim)``.
    """
    return get_arch(arch).build()


def prepare_state_dict(state_dict: Mapping[str, Tensor], arch: str) -> dict[str, Tensor]:
    """Drop the classifier head (``fc.*`` / ``classifier.*``) and rename legacy keys."""
    spec = get_arch(arch)
    kept = {k: v for k, v in state_dict.items() if not k.startswith(spec.classifier_prefix)}
    return spec.remap_keys(kept) if spec.remap_keys is not None else kept
