"""What decides a fine-tuning run: :class:`FinetuneConfig`, with the original's recipe as its
defaults (docs/original-study.md#finetune), and the search grid's size
(docs/original-study.md#finetune-search).

The training loop lives in :mod:`medtransfer.protocols.finetune`; this module needs no torch,
so the command line can read the defaults without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.protocols.metrics import ACCURACY, AUC, AUC_SOURCES, MEAN_PER_CLASS_ACCURACY

FINETUNE_METRICS: tuple[str, ...] = (ACCURACY, MEAN_PER_CLASS_ACCURACY, AUC)
SEARCH_GRID_SIZE = 2  # points per axis of the original's (lr, wd) grid


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tuning run (defaults: the original's,
    docs/original-study.md#finetune).

    ``metric`` is the dataset metric watched by early stopping and reported on the test
    set. ``precision`` is the effective training precision (``fp32``, ``bf16``, ``fp16``;
    see :mod:`medtransfer.compute`); ``fp16`` scales the loss. ``restore_best`` tests the
    best validation state (our fix); ``False`` tests the last weights, as the original did.
    ``workers`` is the number of DataLoader processes (results do not depend on it).
    ``auc_from`` (metric ``auc`` only): ``probabilities`` (a ranking AUC, our fix) or
    ``labels`` (the original's hard-label AUC, for early stopping and the test).
    """

    lr: float = 1e-2
    wd: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = True
    steps: int = 5000
    batch_size: int = 64
    eval_every: int = 200
    patience: int = 3
    early_stopping: bool = False
    augment: bool = True
    image_size: int = 224
    seed: int = 0
    precision: str = "fp32"
    metric: str = ACCURACY
    restore_best: bool = True
    workers: int = 0
    auc_from: str = "probabilities"

    def __post_init__(self) -> None:
        if self.metric not in FINETUNE_METRICS:
            raise ConfigError(
                f"Unknown fine-tuning metric {self.metric!r}; use one of {FINETUNE_METRICS}."
            )
        positive = ("steps", "batch_size", "eval_every", "patience", "image_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"Fine-tuning {name} must be at least 1, got {getattr(self, name)}."
                )
        if self.lr <= 0 or self.wd < 0:
            raise ConfigError(
                f"Fine-tuning needs lr > 0 and wd >= 0, got lr={self.lr}, wd={self.wd}."
            )
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(
                f"Fine-tuning precision must be fp32, bf16 or fp16, got {self.precision!r}."
            )
        if self.seed < 0 or self.workers < 0:
            raise ConfigError("Fine-tuning seed and workers must be non-negative.")
        if self.auc_from not in AUC_SOURCES:
            raise ConfigError(
                f"--auc-from must be one of {', '.join(AUC_SOURCES)}, got {self.auc_from!r}."
            )

    def training_key(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed (all but workers and
        restore_best, which do not change the training trajectory, and auc_from unless the
        metric is auc)."""
        key = self.identity()
        del key["workers"], key["restore_best"]
        return key

    def identity(self) -> dict[str, Any]:
        """Every field, without ``auc_from`` when it cannot matter (a metric other than
        auc), so runs of other metrics keep the keys they had before the field existed."""
        key = asdict(self)
        if self.metric != AUC:
            del key["auc_from"]
        return key
