"""Named intermediate outputs of a backbone (``layer4``-style maps for saliency and
reconstruction).

The names each architecture exposes are in :attr:`ArchSpec.layers`
(:mod:`medtransfer.models.archs`); the original study's names for some of them (DenseNet
``layer4`` for ``features.denseblock4``, ResNet ``fc`` for ``pooled``) are accepted too
(:attr:`ArchSpec.aliases`). Outputs are read with forward hooks during one ordinary
forward pass of the backbone (its sealed normalisation included), in the caller's grad
mode: with gradients on, every returned tensor is part of the graph of the backbone's
output, so gradients with respect to it can be taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from medtransfer.errors import ModelError
from medtransfer.models.archs import ARCHS, ArchSpec, LayerTap
from medtransfer.models.backbone import Backbone

_Hook = Callable[[nn.Module, tuple[object, ...], Tensor], Tensor]


def layer_names(arch: str) -> tuple[str, ...]:
    """The intermediate layers ``arch`` exposes, in forward order."""
    return tuple(_arch(arch).layers)


def resolve_layer(arch: str, name: str) -> str:
    """The name in :func:`layer_names` of ``name`` (itself, or the layer it is an alias of).

    Raises:
        ModelError: ``arch`` has no such layer; the message lists the valid names.
    """
    spec = _arch(arch)
    if name in spec.layers:
        return name
    if name in spec.aliases:
        return spec.aliases[name]
    aliases = ", ".join(f"{alias} ({target})" for alias, target in spec.aliases.items())
    raise ModelError(
        f"{spec.name} has no intermediate layer {name!r}; use one of: {', '.join(spec.layers)}"
        + (f"; or the original study's names: {aliases}." if aliases else ".")
    )


def _arch(arch: str) -> ArchSpec:
    spec = ARCHS.get(arch)
    if spec is None:
        raise ModelError(
            f"Intermediate layers are named for the catalog architectures "
            f"({', '.join(ARCHS)}), not for {arch!r}."
        )
    return spec


def intermediate_outputs(
    backbone: Backbone, images: Tensor, layers: Sequence[str]
) -> dict[str, Tensor]:
    """The outputs of the named ``layers`` of ``backbone`` on ``images``.

    Args:
        backbone: a catalog backbone (the architecture's names are in
            :func:`layer_names`).
        images: ``(B, 3, H, W)`` float in [0, 1], as for ``backbone(images)``.
        layers: names from :func:`layer_names` or their aliases, e.g.
            ``['layer3', 'layer4']``.

    Returns:
        ``{name: tensor}`` in the order asked: ``(B, C, h, w)`` for spatial layers,
        ``(B, feature_dim)`` for ``pooled``.

    Raises:
        ModelError: a name the architecture does not expose (the message lists the valid
            ones), or a backbone outside the catalog architectures.
    """
    arch = _arch(backbone.spec.arch)
    unknown = [name for name in layers if name not in arch.layers and name not in arch.aliases]
    if unknown:
        resolve_layer(arch.name, unknown[0])  # raises, listing the valid names
    outputs: dict[str, Tensor] = {}
    handles: list[RemovableHandle] = []
    try:
        for name in dict.fromkeys(layers):
            tap = arch.layers[resolve_layer(arch.name, name)]
            module = backbone.trunk.get_submodule(tap.module)
            handles.append(module.register_forward_hook(_capture(name, tap, outputs)))
        backbone(images)
    finally:
        for handle in handles:
            handle.remove()
    return {name: outputs[name] for name in layers}


def _capture(name: str, tap: LayerTap, outputs: dict[str, Tensor]) -> _Hook:
    """A forward hook that keeps the (tapped) output and hands a copy on.

    The trunk goes on with a clone, so in-place operations after the layer (ResNet's
    ``relu`` after ``bn1``, DenseNet's ReLU after ``norm5``) cannot change what was kept,
    while the kept tensor stays in the graph of the backbone's output.
    """

    def hook(module: nn.Module, args: tuple[object, ...], output: Tensor) -> Tensor:
        kept = tap.then(output) if tap.then is not None else output
        outputs[name] = kept
        return kept.clone()

    return hook
