"""SwAV checkpoints (facebookresearch/swav).

The released ``swav_800ep_pretrain.pth.tar`` is a bare state dict of the
DistributedDataParallel-wrapped ``src/resnet50.py`` model (the repo's ``hubconf.py`` loads it
without unwrapping): ``module.<torchvision key>`` for the trunk, plus
``module.projection_head.{0,1,3}.*`` (Linear 2048→2048, BatchNorm1d, Linear 2048→128) and
``module.prototypes.weight`` ``(3000, 128)`` (``module.prototypesN.weight`` with several
prototype heads). Training checkpoints of ``main_swav.py`` wrap the same dict as
``{'epoch', 'state_dict', 'optimizer'}``; ``eval_linear.py`` accepts both, and so does this.

SwAV's ResNet pads the input by 1 and uses ``conv1`` padding 2, which equals torchvision's
padding 3 (both zero padding), so the trunk is torchvision's ResNet exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from medtransfer.errors import ModelError
from medtransfer.models.convert.common import (
    check_arch,
    describe_keys,
    drop_prefixes,
    keep_prefix,
    safe_torch_load,
)

TRUNK_PREFIX = "module."
HEAD_PREFIXES: tuple[str, ...] = ("projection_head.", "prototypes")
_FORMAT = "SwAV checkpoint"


def convert_swav(path: Path, arch: str) -> dict[str, Tensor]:
    """A SwAV state dict (bare, or under ``'state_dict'``) -> the torchvision trunk.

    Input: ``{'module.<key>': Tensor, 'module.projection_head.*', 'module.prototypes.weight'}``.
    Output: ``{<key>: Tensor}`` without the projection head and prototypes.

    Raises:
        ModelError: unsafe or unreadable file, not a dict, or no ``module.`` keys.
    """
    check_arch(arch, "swav")
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, Mapping):
        raise ModelError(
            f"The file {path} is not a {_FORMAT}: expected a state dict of "
            f"'module.<name>' tensors, found {describe_keys(checkpoint)}."
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ModelError(
            f"The file {path} is not a {_FORMAT}: its 'state_dict' entry is a "
            f"{type(state).__name__}, not a dict of tensors."
        )
    trunk = keep_prefix(state, TRUNK_PREFIX, path, _FORMAT)
    return drop_prefixes(trunk, HEAD_PREFIXES)
