"""Full fine-tuning of a backbone with a linear head (docs/original-study.md#finetune), fixed.

The original trained ``nn.Sequential(backbone, nn.Linear(D, C))`` end to end with SGD
(momentum 0.9, Nesterov) under a cosine schedule for a fixed number of steps, optionally
early-stopping on a validation split. Kept as the original did it:

* the optimiser, the schedule (``CosineAnnealingLR(T_max=steps)`` stepped per optimiser
  step, also when early stopping ends training sooner), the loop that restarts the loader
  until ``steps``, BatchNorm in train mode, the augmentation, the early-stopping rule and
  its patience, and the search grid (docs/original-study.md#finetune-search, weight decay
  passed as ``w / lr``);
* with early stopping, training uses ``train`` and validates on ``val``; without it,
  training uses ``train + val`` and nothing is validated.

Fixed (docs/original-study.md#defect-e18, #defect-e23):

* the best validation state is a *copy*, and it is restored before testing
  (``restore_best=True``; ``False`` tests the last weights, as the original in effect did);
* AUC comes from softmax probabilities, never from hard predictions;
* every random draw comes from a seeded generator (see ``finetune_data``), and a run writes
  resumable checkpoints: a run killed and restarted ends with the same weights as one
  that was never interrupted (bitwise on the CPU).

The backbone is any ``nn.Module`` mapping images (B, 3, H, W) in [0, 1] to features
(B, D) with an int attribute ``feature_dim`` = D.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from medtransfer.checkpoints import read_checkpoint, save_tensors, write_checkpoint
from medtransfer.compute import autocast, grad_scaler, is_cuda
from medtransfer.errors import ConfigError, ProtocolError
from medtransfer.fsutil import sha256_json
from medtransfer.protocols.finetune_config import SEARCH_GRID_SIZE, FinetuneConfig
from medtransfer.protocols.finetune_data import (
    BatchOrder,
    EvalImages,
    FinetuneData,
    ImageSplit,
    ImageTransform,
    TrainImages,
    derive_seed,
)
from medtransfer.protocols.metrics import (
    AUC,
    classification_metrics,
    metric_from_scores,
    metric_key,
)

__all__ = [
    "CHECKPOINT_NAME",
    "WEIGHTS_NAME",
    "FinetuneResult",
    "SearchResult",
    "StepCallback",
    "build_model",
    "evaluate",
    "finetune",
    "make_optimisation",
    "run_search",
    "search_grid",
    "validation_metric",
]

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "finetuned.pt"
CHECKPOINT_VERSION = 1
_HEAD_TAG = 3  # seed-derivation tag of the head's initialisation

#: Called after every optimiser step with (step, training loss, model); raising stops the
#: run (the last checkpoint stays, so the run can be resumed).
StepCallback = Callable[[int, float, nn.Module], None]


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    ``metrics``: test-set values, all in percent:
    :func:`~medtransfer.protocols.metrics.classification_metrics` of the probabilities.
    ``state_dict``: the tested weights of ``Sequential(backbone, head)`` on the CPU.
    """

    metric: str
    metrics: dict[str, float]
    lr: float
    wd: float
    steps: int
    steps_run: int
    best_step: int | None
    best_val: float | None
    stopped_step: int | None
    resumed_from: int | None
    tested: str  # "best" or "last"
    val_curve: list[tuple[int, float]]
    timings: dict[str, float]
    n_train: int
    n_val: int
    n_test: int
    state_dict: dict[str, Tensor] = field(repr=False)
    weights_path: Path | None = None
    test_labels: np.ndarray | None = field(default=None, repr=False)
    test_probs: np.ndarray | None = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """The test value of the dataset metric."""
        return self.metrics[metric_key(self.metric)]


@dataclass
class SearchResult:
    """Outcome of :func:`run_search`: the chosen (lr, wd) and every (lr, wd, val score)."""

    lr: float
    wd: float
    best_val: float
    scores: list[tuple[float, float, float]]


@dataclass
class _TrainState:
    """What a checkpoint carries besides the module states."""

    step: int = 0
    best_state: dict[str, Tensor] | None = None
    best_val: float | None = None
    best_step: int | None = None
    counter: int = 0
    stopped_step: int | None = None
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    done: bool = False


# --------------------------------------------------------------------------- model


def feature_dim(backbone: nn.Module) -> int:
    """The backbone's ``feature_dim`` (D), checked."""
    dim = getattr(backbone, "feature_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ProtocolError(
            f"Fine-tuning needs a backbone with a positive int feature_dim; "
            f"{type(backbone).__name__} has {dim!r}."
        )
    return dim


def build_model(backbone: nn.Module, n_classes: int, seed: int) -> nn.Sequential:
    """``Sequential(backbone, Linear(D, C))``: (B, 3, H, W) in [0, 1] -> logits (B, C).

    The head gets PyTorch's default Linear initialisation (uniform in ±1/sqrt(D) for weight
    and bias) drawn from a generator seeded by ``seed``; the global RNG is not touched.
    """
    dim = feature_dim(backbone)
    with torch.random.fork_rng(devices=[]):  # construction draws a default init; discarded
        head = nn.Linear(dim, n_classes)
    generator = torch.Generator().manual_seed(derive_seed(seed, _HEAD_TAG))
    bound = 1 / math.sqrt(dim)
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return nn.Sequential(backbone, head)


def _cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    """A deep copy of ``model.state_dict()`` on the CPU (never references to live tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    split: ImageSplit,
    transform: ImageTransform,
    config: FinetuneConfig,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Eval mode, no grad, over ``split`` with the eval ``transform``.

    Returns (labels (N,) int64, softmax probabilities (N, C) float64). The model is put
    back into train mode afterwards.
    """
    loader = torch.utils.data.DataLoader(
        EvalImages(split, transform),
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        generator=torch.Generator(),  # DataLoader draws a base seed; keep the global RNG out
    )
    labels, probs = [], []
    model.eval()
    try:
        with torch.no_grad():
            for images, targets in loader:
                with autocast(device, config.precision):
                    logits = model(images.to(device))
                probs.append(torch.softmax(logits.float(), dim=1).cpu().double().numpy())
                labels.append(targets.numpy().astype(np.int64))
    finally:
        model.train()
    if not labels:
        raise ProtocolError("Cannot evaluate a fine-tuned model on an empty split.")
    return np.concatenate(labels), np.concatenate(probs)


def validation_metric(
    model: nn.Module,
    split: ImageSplit,
    transform: ImageTransform,
    config: FinetuneConfig,
    device: torch.device,
) -> float:
    """The dataset metric of ``model`` on the validation ``split`` (percent)."""
    labels, probs = evaluate(model, split, transform, config, device)
    return metric_from_scores(labels, probs, config.metric)


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(config: FinetuneConfig, data: FinetuneData) -> str:
    train = data.training_split(config.early_stopping)
    val = data.val.fingerprint() if config.early_stopping else ""
    return sha256_json([config.training_key(), data.n_classes, train.fingerprint(), val])


def _save_checkpoint(path: Path, parts: dict[str, Any], state: _TrainState) -> None:
    """Write the module states, ``state`` and the data-order position atomically."""
    fingerprint = parts.get("fingerprint", "")
    payload = {
        **{k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in parts.items()},
        "step": state.step,
        "best_state": state.best_state,
        "best_val": state.best_val,
        "best_step": state.best_step,
        "counter": state.counter,
        "stopped_step": state.stopped_step,
        "val_curve": [[s, v] for s, v in state.val_curve],
        "done": state.done,
    }
    write_checkpoint(path, payload, version=CHECKPOINT_VERSION, fingerprint=fingerprint)


def _load_checkpoint(path: Path, parts: dict[str, Any], fingerprint: str) -> _TrainState:
    """Load module states from ``path`` into ``parts``; return the saved train state."""
    payload = read_checkpoint(
        path, version=CHECKPOINT_VERSION, fingerprint=fingerprint, what="fine-tuning"
    )
    for name in ("model", "optimizer", "scheduler", "scaler"):
        parts[name].load_state_dict(payload[name])
    return _TrainState(
        step=payload["step"],
        best_state=payload["best_state"],
        best_val=payload["best_val"],
        best_step=payload["best_step"],
        counter=payload["counter"],
        stopped_step=payload["stopped_step"],
        val_curve=[(int(s), float(v)) for s, v in payload["val_curve"]],
        done=payload["done"],
    )


# --------------------------------------------------------------------------- training


def _early_stopping_check(
    state: _TrainState, model: nn.Module, value: float, patience: int
) -> bool:
    """Apply the original's rule at a validation check; returns True to stop.

    First check: best ← value, save. value < best: counter += 1, stop at ``patience``.
    Otherwise (ties included): best ← value, counter ← 0, save (a deep copy).
    """
    state.val_curve.append((state.step, value))
    if state.best_val is not None and value < state.best_val:
        state.counter += 1
        return state.counter >= patience
    state.best_val, state.best_step, state.counter = value, state.step, 0
    state.best_state = _cpu_copy(model)
    return False


def _train_step(
    parts: dict[str, Any], images: Tensor, labels: Tensor, device: torch.device, precision: str
) -> tuple[float, float]:
    """One SGD step and one scheduler step; returns (loss, batch accuracy in percent).

    Under ``fp16`` a step whose gradients overflowed is skipped by the loss scaler; the
    scheduler then does not step either, so the learning-rate schedule follows the steps
    the optimiser really took."""
    model, optimizer, scaler = parts["model"], parts["optimizer"], parts["scaler"]
    images, labels = images.to(device), labels.to(device)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
    scaler.scale(loss).backward()
    scale_before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    skipped = scale_before is not None and scaler.get_scale() < scale_before
    if not skipped:
        parts["scheduler"].step()
    correct = (logits.argmax(dim=1) == labels).float().mean().item() * 100
    return loss.item(), correct


def make_optimisation(
    model: nn.Module, config: FinetuneConfig, device: torch.device
) -> dict[str, Any]:
    """``{'model', 'optimizer', 'scheduler', 'scaler'}``: SGD over all parameters (momentum,
    Nesterov, weight decay), ``CosineAnnealingLR(T_max=steps)`` and a GradScaler enabled
    for ``fp16`` training."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.wd,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    scaler = grad_scaler(device, config.precision)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}


def _train(
    parts: dict[str, Any],
    state: _TrainState,
    data: FinetuneData,
    config: FinetuneConfig,
    device: torch.device,
    save: Callable[[_TrainState], None],
    progress: bool,
    on_step: StepCallback | None,
) -> None:
    """Run optimiser steps ``state.step + 1 .. config.steps`` (or until early stopping)."""
    model = parts["model"]
    split = data.training_split(config.early_stopping)
    order = BatchOrder(len(split), config.batch_size, config.seed)
    transform = data.eval_transform(config.image_size)
    dataset = TrainImages(split, config.image_size, config.augment, transform)
    batches: Generator[tuple[int, Tensor, Tensor], None, None] = order.iterate(
        dataset, state.step + 1, config.workers, pin_memory=is_cuda(device)
    )
    model.train()
    with (
        closing(batches),
        tqdm(
            total=config.steps,
            initial=state.step,
            desc="fine-tune",
            unit="step",
            disable=not progress,
        ) as bar,
    ):
        for step, images, labels in batches:
            if step > config.steps:
                break
            loss, acc = _train_step(parts, images, labels, device, config.precision)
            state.step = step
            stop = False
            if config.early_stopping and step % config.eval_every == 0:
                last_val = validation_metric(model, data.val, transform, config, device)
                stop = _early_stopping_check(state, model, last_val, config.patience)
            postfix = {"loss": f"{loss:.3f}", "acc": f"{acc:.1f}"}
            if state.val_curve:
                postfix["val"] = f"{state.val_curve[-1][1]:.2f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if stop:
                state.stopped_step = step
            state.done = stop or step == config.steps
            if state.done or step % config.eval_every == 0:
                save(state)
            if on_step is not None:
                on_step(step, loss, model)
            if state.done:
                break
    state.done = True


def _check_data(data: FinetuneData, config: FinetuneConfig) -> None:
    if data.n_classes < 2:
        raise ProtocolError(f"Fine-tuning needs at least 2 classes, got {data.n_classes}.")
    if config.metric == AUC and data.n_classes != 2:
        raise ProtocolError(f"The metric auc needs a binary task; this one has {data.n_classes}.")
    for name in ("train", "val", "test"):
        split: ImageSplit = getattr(data, name)
        bad = [y for y in split.labels if not 0 <= int(y) < data.n_classes]
        if bad:
            shown = sorted(set(bad))[:5]
            raise ProtocolError(
                f"The {name} split has labels outside [0, {data.n_classes}): {shown}."
            )
    if len(data.training_split(config.early_stopping)) == 0 or len(data.test) == 0:
        raise ProtocolError("Fine-tuning needs a non-empty training split and test split.")
    if config.early_stopping and len(data.val) == 0:
        raise ProtocolError("Early stopping needs a non-empty validation split.")


def finetune(
    backbone: nn.Module,
    data: FinetuneData,
    config: FinetuneConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> FinetuneResult:
    """Fine-tune ``Sequential(backbone, Linear(D, C))`` on ``data`` and test it.

    ``backbone`` is trained in place (pass a fresh one per run). With ``checkpoint_dir``,
    a checkpoint is written there every ``eval_every`` steps and at the end, a run resumes
    from it when present, and the tested weights are saved as ``finetuned.pt``.
    ``on_step`` is called after every optimiser step (see :data:`StepCallback`).
    """
    _check_data(data, config)
    device = torch.device(device)
    started = time.perf_counter()
    model = build_model(backbone, data.n_classes, config.seed).to(device)
    parts = make_optimisation(model, config, device)
    fingerprint = _fingerprint(config, data)
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    state, resumed_from = _TrainState(), None
    if path is not None and path.is_file():
        state = _load_checkpoint(path, parts, fingerprint)
        resumed_from = state.step

    split = data.training_split(config.early_stopping)
    order = BatchOrder(len(split), config.batch_size, config.seed)

    def save(current: _TrainState) -> None:
        if path is not None:
            epoch, offset = order.position(current.step + 1)  # where the next batch comes from
            data_order = {**asdict(order), "next_epoch": epoch, "next_offset": offset}
            extra = {"fingerprint": fingerprint, "data_order": data_order}
            _save_checkpoint(path, {**parts, **extra}, current)

    if not state.done:
        _train(parts, state, data, config, device, save, progress, on_step)
    trained = time.perf_counter()
    tested = "last"
    if config.early_stopping and config.restore_best and state.best_state is not None:
        model.load_state_dict(state.best_state)
        tested = "best"
    transform = data.eval_transform(config.image_size)
    labels, probs = evaluate(model, data.test, transform, config, device)
    metrics = classification_metrics(labels, probs, config.metric)
    weights = _cpu_copy(model)
    weights_path = None
    if checkpoint_dir is not None:
        weights_path = save_tensors(Path(checkpoint_dir) / WEIGHTS_NAME, weights)
    finished = time.perf_counter()
    return FinetuneResult(
        metric=config.metric,
        metrics=metrics,
        lr=config.lr,
        wd=config.wd,
        steps=config.steps,
        steps_run=state.step,
        best_step=state.best_step,
        best_val=state.best_val,
        stopped_step=state.stopped_step,
        resumed_from=resumed_from,
        tested=tested,
        val_curve=list(state.val_curve),
        timings={
            "train_s": trained - started,
            "test_s": finished - trained,
            "total_s": finished - started,
        },
        n_train=len(data.training_split(config.early_stopping)),
        n_val=len(data.val) if config.early_stopping else 0,
        n_test=len(data.test),
        state_dict=weights,
        weights_path=weights_path,
        test_labels=labels,
        test_probs=probs,
    )


# --------------------------------------------------------------------------- search


def search_grid(g: int = SEARCH_GRID_SIZE) -> list[tuple[float, float]]:
    """The original's (lr, wd) grid (docs/original-study.md#finetune-search), in its order.

    lr runs over ``logspace(-4, -1, g)`` from largest to smallest; for each, ``w`` runs over
    ``[0] + logspace(-6, -3, g)`` and the weight decay passed is ``w / lr``. So g = 2 gives
    (0.1, 0), (0.1, 1e-5), (0.1, 1e-2), (1e-4, 0), (1e-4, 1e-2), (1e-4, 10). Computed in
    float64 (the original's float32 gave e.g. 0.10000000149).
    """
    if g < 1:
        raise ConfigError(f"The search grid size must be at least 1, got {g}.")
    lrs = torch.logspace(-4, -1, g, dtype=torch.float64).flip(0).tolist()
    ws = [0.0, *torch.logspace(-6, -3, g, dtype=torch.float64).tolist()]
    return [(lr, w / lr) for lr in lrs for w in ws]


def run_search(
    backbone_factory: Callable[[], nn.Module],
    data: FinetuneData,
    config: FinetuneConfig,
    *,
    grid_size: int = SEARCH_GRID_SIZE,
    device: str | torch.device = "cpu",
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> SearchResult:
    """Train a fresh model per grid point for the full ``steps`` on ``train`` (no early
    stopping) and score it on ``val`` with the dataset metric.

    The best is the first configuration whose score is strictly greater than the running
    best (which starts below any score, so a grid scoring 0 everywhere picks its first
    point). With ``checkpoint_dir``, configuration i checkpoints in ``search_<i>/``.
    """
    if len(data.val) == 0:
        raise ProtocolError("The search scores on the validation split, which is empty.")
    # Train on train alone (no validation checks) and "test" on val.
    empty = ImageSplit([], [], data.train.loader)
    search_data = replace(data, val=empty, test=data.val)
    scores: list[tuple[float, float, float]] = []
    best: tuple[float, float, float] | None = None
    for i, (lr, wd) in enumerate(search_grid(grid_size)):
        point = replace(config, lr=lr, wd=wd, early_stopping=False)
        folder = Path(checkpoint_dir) / f"search_{i:02d}" if checkpoint_dir is not None else None
        result = finetune(
            backbone_factory(),
            search_data,
            point,
            device=device,
            checkpoint_dir=folder,
            progress=progress,
        )
        value = result.value
        scores.append((lr, wd, value))
        if best is None or value > best[2]:
            best = (lr, wd, value)
    assert best is not None
    return SearchResult(lr=best[0], wd=best[1], best_val=best[2], scores=scores)
