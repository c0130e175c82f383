"""PIRL checkpoints from PyContrast (HobbitLong/PyContrast, ``PIRL.pth`` in its model zoo).

``ContrastTrainer.save`` writes ``{'model', 'contrast', 'optimizer', 'epoch'}`` (plus
``'model_ema'`` for MoCo-style memories and ``'amp'`` with mixed precision; PIRL uses the
memory bank, so neither). ``'model'`` is the DistributedDataParallel-wrapped
``RGBMultiHeads``: ``module.encoder.<torchvision key>`` (a torchvision ResNet-50 without
``fc``), ``module.head.0.*`` (Linear 2048→128) and ``module.head_jig.fc1.*`` /
``module.head_jig.fc2.*`` (the jigsaw head). ``'contrast'`` holds the memory bank
``{'memory': (n_images, 128)}``. No ``argparse.Namespace`` is saved, so the file needs no
global beyond tensors. PyContrast's own ``detection/convert_pretrained.py`` reads the same
``'model'`` / ``'module.encoder.'`` layout.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from medtransfer.models.convert.common import check_arch, keep_prefix, safe_torch_load, unwrap

ENCODER_PREFIX = "module.encoder."
_FORMAT = "PyContrast checkpoint"


def convert_pirl(path: Path, arch: str) -> dict[str, Tensor]:
    """A PyContrast ``PIRL.pth`` -> the encoder as a torchvision state dict.

    Input: ``{'model': {'module.encoder.<key>': Tensor, 'module.head*': ...}, ...}``.
    Output: ``{<key>: Tensor}``; heads, memory bank and optimizer state are left out.

    Raises:
        ModelError: unsafe or unreadable file, no ``'model'``, or no encoder keys.
    """
    check_arch(arch, "pirl")
    checkpoint = safe_torch_load(path)
    state = unwrap(checkpoint, "model", path, _FORMAT)
    return keep_prefix(state, ENCODER_PREFIX, path, _FORMAT)
