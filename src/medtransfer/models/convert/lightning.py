"""MoCo checkpoints written by PyTorch Lightning (facebookresearch/CovidPrognosis).

CovidPrognosis trains ``cp.models.MoCo`` inside a LightningModule as ``self.model`` (pinned
pytorch-lightning 1.0.8, torch 1.7.1), so the checkpoint is Lightning's::

    {'epoch', 'global_step', 'pytorch-lightning_version',
     'callbacks': {ModelCheckpoint: {'monitor', 'best_model_score', ...}},
     'optimizer_states': [SGD state], 'lr_schedulers': [CosineAnnealingLR state],
     'state_dict': {'model.encoder_q.<densenet121 key>',
                    'model.encoder_q.classifier.{weight,bias}' (Linear 1024→128),
                    'model.encoder_k.*', 'model.queue' (128, 65536), 'model.queue_ptr'},
     ['hparams_name', 'hyper_parameters']}

Two globals can occur besides tensors, and only these are allowed, each as an inert
stand-in (nothing is imported):

* ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``: Lightning 1.0 keys each
  callback's saved state by the callback *class* (``Trainer.on_save_checkpoint``), and
  ``train_moco.py`` adds a ModelCheckpoint. The class is only a dict key here.
* ``pytorch_lightning.utilities.parsing.AttributeDict``: the repo's earlier
  ``moco_trainer.py`` sets ``self.hparams = args``; Lightning versions before 1.0 saved
  ``model.hparams`` itself, an AttributeDict (a ``dict`` subclass). It is read as a ``dict``.

Keys follow torchvision's current DenseNet names; legacy names (``norm.1``) are fixed later
by :func:`medtransfer.models.archs.prepare_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from medtransfer.models.convert.common import check_arch, query_encoder, safe_torch_load


class LightningClassStandIn:
    """Inert stand-in for a Lightning class a checkpoint names (e.g. as a dict key)."""


ALLOWED_GLOBALS: dict[str, object] = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": LightningClassStandIn,
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
}
QUERY_ENCODER_PREFIX = "model.encoder_q."
# Where Lightning versions kept the module's hyper-parameters (newest first).
_HPARAMS_KEYS: tuple[str, ...] = ("hyper_parameters", "module_arguments", "hparams")
_FORMAT = "Lightning MoCo checkpoint"


def convert_lightning_moco(path: Path, arch: str) -> dict[str, Tensor]:
    """A CovidPrognosis ``.pt`` -> the query encoder as a torchvision state dict.

    Input: ``{'state_dict': {'model.encoder_q.<key>': Tensor, ...}, ...}`` (see module doc).
    Output: ``{<key>: Tensor}`` without the classifier (the 128-d MoCo projection), the
    momentum encoder, the queue and the optimizer/scheduler/callback states.

    Raises:
        ModelError: unsafe or unreadable file (any global not in :data:`ALLOWED_GLOBALS`),
            no ``'state_dict'``, no query-encoder keys, or hyper-parameters naming another
            architecture.
    """
    check_arch(arch, "lightning_moco")
    checkpoint = safe_torch_load(path, allowed_globals=ALLOWED_GLOBALS)
    return query_encoder(checkpoint, arch, path, _FORMAT, QUERY_ENCODER_PREFIX, _declared_arch)


def _declared_arch(checkpoint: Mapping[str, object]) -> object:
    """The ``arch`` hyper-parameter, if the checkpoint saved one."""
    for key in _HPARAMS_KEYS:
        hparams = checkpoint.get(key)
        if isinstance(hparams, Mapping) and "arch" in hparams:
            return hparams["arch"]
    return None
