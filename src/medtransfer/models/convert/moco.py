"""MoCo checkpoints (facebookresearch/moco ``main_moco.py``, and MoCo-CXR's fork of it).

``main_moco.py`` saves ``{'epoch', 'arch', 'state_dict', 'optimizer'}`` where ``state_dict``
is the DistributedDataParallel-wrapped MoCo module's:

* ``module.encoder_q.<torchvision key>``: the query encoder, whose classifier is the
  projection head (``fc`` or, with ``--mlp``, ``fc.0`` / ``fc.2``; ``classifier*`` for
  DenseNet in MoCo-CXR);
* ``module.encoder_k.*``: the momentum encoder; ``module.queue`` ``(dim, K)`` and
  ``module.queue_ptr`` ``(1,)``.

The released MoCo v2 800-epoch file was "cleaned up for transfer learning usage, with the
solver states removed" (facebookresearch/moco#27): ``{'epoch', 'arch', 'state_dict'}`` with
the query encoder only. MoCo-CXR publishes full training checkpoints (both encoders, queue,
Adam state). Only the query encoder is kept, as MoCo's own ``main_lincls.py`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from medtransfer.models.convert.common import check_arch, query_encoder, safe_torch_load

QUERY_ENCODER_PREFIX = "module.encoder_q."
_FORMAT = "MoCo checkpoint"


def convert_moco(path: Path, arch: str) -> dict[str, Tensor]:
    """A MoCo ``.pth.tar`` -> the query encoder as a torchvision state dict for ``arch``.

    Input: ``{'arch': str, 'state_dict': {'module.encoder_q.<key>': Tensor, ...}, ...}``.
    Output: ``{<key>: Tensor}`` with the projection head (``fc*`` / ``classifier*``), the
    momentum encoder, the queue and the optimizer state left out.

    Raises:
        ModelError: unsafe or unreadable file, no ``'state_dict'``, no query-encoder keys,
            or a checkpoint whose ``'arch'`` is not ``arch``.
    """
    check_arch(arch, "moco")
    checkpoint = safe_torch_load(path)
    return query_encoder(checkpoint, arch, path, _FORMAT, QUERY_ENCODER_PREFIX, _declared_arch)


def _declared_arch(checkpoint: Mapping[str, object]) -> object:
    """The checkpoint's own ``'arch'`` entry (``main_moco.py`` saves ``args.arch``)."""
    return checkpoint.get("arch")
