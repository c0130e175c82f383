"""Feature inversion with a deep image prior: which image makes a backbone's feature map?

For each target image ``t`` (``(3, S, S)`` in [0, 1]) a fresh skip generator
(:class:`~medtransfer.analysis.dip.SkipGenerator`) maps a fixed random code ``z``
(``(32, C, C)``, ``C`` = ``code_size`` >= S) to an image ``G(z)``; its ``S x S`` crop ``x``
goes through the caller's feature map ``f`` (a named intermediate output of a frozen
backbone), and Adam (lr 1e-3) on the generator's parameters alone minimises
``mean((f(x) - f(t))^2)`` for ``steps`` steps. The result is ``G(z)``'s crop after the last
step: what the features kept of the image (docs/original-study.md#reconstruction).

Seeded: the code (``U[0, 1) * code_scale``) and the generator's initial parameters come from
one CPU generator seeded with ``seed``, the same for every image, so a run is reproducible
and every image starts from the same prior (the original drew both unseeded, defect e32).

Several images at once: one generator per image, trained side by side as one grouped
module (see :mod:`medtransfer.analysis.dip`) with the backbone run on the batch of crops;
each image's loss and update depend on that image only, so the result equals separate
runs up to floating-point reordering.

Checkpoints: with a ``checkpoint_dir``, the generator, optimiser and loss curve are saved
every ``checkpoint_every`` steps and at the end; a run finds its checkpoint there and
resumes, ending with what an uninterrupted run ends with.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medtransfer.analysis.dip import SkipConfig, SkipGenerator, count_parameters
from medtransfer.checkpoints import read_checkpoint, write_checkpoint
from medtransfer.compute import autocast, grad_scaler
from medtransfer.errors import ConfigError
from medtransfer.fsutil import sha256_json
from medtransfer.progress import progress as progress_display

#: Where the ``S x S`` crop is taken from the ``C x C`` generator output.
CROPS: tuple[str, ...] = ("centre", "top-left")
#: How [0, 1] floats become 8-bit pixels: nearest value, or ``int(255 x)`` as torchvision's
#: ``ToPILImage`` did in the original.
QUANTIZERS: tuple[str, ...] = ("round", "truncate")
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1

#: ``features(images (B, 3, S, S) in [0, 1]) -> (B, ...)``: the map being inverted.
FeatureMap = Callable[[Tensor], Tensor]
#: ``on_step(step, losses)``: called after every optimiser step with each image's loss.
StepCallback = Callable[[int, list[float]], None]


@dataclass(frozen=True)
class ReconstructionConfig:
    """One inversion's settings (the defaults are the original study's, corrected)."""

    steps: int = 3001
    lr: float = 1e-3
    seed: int = 0
    image_size: int = 224
    code_size: int = 256
    code_scale: float = 0.1
    crop: str = "centre"
    precision: str = "fp32"
    checkpoint_every: int = 250
    curve_every: int = 10
    generator: SkipConfig = field(default_factory=SkipConfig)
    #: How several generators' convolutions run (speed only, see SkipGenerator.grouped).
    grouped: bool | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}.")
        if self.crop not in CROPS:
            raise ConfigError(f"Unknown crop {self.crop!r}; use one of {', '.join(CROPS)}.")
        depth = self.generator.depth
        step = 2**depth
        if self.code_size % step:
            raise ConfigError(
                f"--code-size {self.code_size} must be a multiple of {step} for a generator "
                f"of {depth} scales."
            )
        if self.code_size < 2 * step:
            raise ConfigError(
                f"--code-size {self.code_size} leaves the deepest of the generator's {depth} "
                f"scales {self.code_size // step}x{self.code_size // step} pixels; its "
                "BatchNorm, over one image, needs at least 2x2. Give --code-size "
                f"{2 * step} or more (a multiple of {step}), or fewer scales with --depth."
            )
        if not 0 < self.image_size <= self.code_size:
            raise ConfigError(
                f"The crop (-i/--image-size {self.image_size}) must fit in the generator "
                f"output (--code-size {self.code_size})."
            )
        if self.checkpoint_every < 1 or self.curve_every < 1:
            raise ConfigError("--checkpoint-every and the curve interval must be at least 1.")

    def describe(self) -> dict[str, Any]:
        """What defines the result (not the checkpoint interval), for records and keys."""
        return {
            "steps": self.steps,
            "lr": self.lr,
            "seed": self.seed,
            "image_size": self.image_size,
            "code": {
                "channels": self.generator.in_channels,
                "size": self.code_size,
                "distribution": f"U[0,1) * {self.code_scale}",
            },
            "crop": self.crop,
            "precision": self.precision,
            "optimizer": "adam",
            "loss": "mse",
            "curve_every": self.curve_every,
            "generator": self.generator.describe(),
        }


@dataclass(frozen=True)
class ReconstructionResult:
    """A finished inversion of ``G`` images.

    Attributes:
        outputs: ``(G, 3, C, C)`` float32, the generators' raw outputs after the last step.
        crops: ``(G, 3, S, S)`` float32, the crops the backbone saw (unclipped).
        final_loss: per image, the feature MSE of its final crop.
        curve_steps: the steps at which the loss was recorded (1, 1 + curve_every, ...,
            and the last).
        curve: per image, its loss at ``curve_steps`` (before that step's update).
        resumed_from: the checkpoint step this call started from (None: from scratch).
        steps_run: optimiser steps this call ran.
        seconds: wall time of this call's optimisation.
        parameters: trainable parameters of one generator.
    """

    outputs: Tensor
    crops: Tensor
    final_loss: list[float]
    curve_steps: list[int]
    curve: list[list[float]]
    resumed_from: int | None
    steps_run: int
    seconds: float
    parameters: int


def crop(images: Tensor, size: int, mode: str) -> Tensor:
    """The ``size x size`` crop of ``images`` ``(B, C, H, W)``: centred (offset
    ``(H - size) // 2``) or top-left (``[:size, :size]``, the original's)."""
    if mode == "top-left":
        return images[:, :, :size, :size]
    top, left = (images.shape[2] - size) // 2, (images.shape[3] - size) // 2
    return images[:, :, top : top + size, left : left + size]


def seeded_start(config: ReconstructionConfig, members: int) -> tuple[Tensor, SkipGenerator]:
    """The fixed code ``(members, 32, C, C)`` and a generator of ``members`` members.

    One CPU generator seeded with ``config.seed`` draws the code (``U[0,1) * code_scale``)
    and then each member's parameters (every member continues from the same state), so
    every image gets the code and initial generator a run of that image alone gets."""
    rng = torch.Generator().manual_seed(config.seed)
    shape = (1, config.generator.in_channels, config.code_size, config.code_size)
    code = torch.rand(shape, generator=rng) * config.code_scale
    generator = SkipGenerator(config.generator, members, grouped=config.grouped)
    generator.reset_parameters(rng.get_state())
    return code.expand(members, -1, -1, -1).contiguous(), generator


def quantize(images: Tensor, mode: str = "round") -> np.ndarray:
    """``(B, 3, H, W)`` floats -> ``(B, H, W, 3)`` uint8: clamped to [0, 1], times 255, then
    rounded to the nearest value or truncated (``mode``, see :data:`QUANTIZERS`)."""
    if mode not in QUANTIZERS:
        raise ConfigError(f"Unknown quantisation {mode!r}; use one of {', '.join(QUANTIZERS)}.")
    scaled = images.detach().float().clamp(0, 1).mul(255)
    scaled = scaled.round() if mode == "round" else scaled.floor()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _tensor_digest(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _per_image_mse(features: Tensor, targets: Tensor) -> Tensor:
    """``(G, ...)`` and ``(G, ...)`` -> ``(G,)``: each image's mean squared difference."""
    return (features.float() - targets).pow(2).flatten(1).mean(dim=1)


@dataclass
class _State:
    step: int = 0
    curve_steps: list[int] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)


def _save(path: Path, parts: dict[str, Any], state: _State, fingerprint: str) -> None:
    payload = {
        "step": state.step,
        "curve_steps": state.curve_steps,
        "curve": state.curve,
        **{name: part.state_dict() for name, part in parts.items()},
    }
    write_checkpoint(path, payload, version=CHECKPOINT_VERSION, fingerprint=fingerprint)


def _load(path: Path, parts: dict[str, Any], fingerprint: str) -> _State:
    payload = read_checkpoint(
        path, version=CHECKPOINT_VERSION, fingerprint=fingerprint, what="reconstruction"
    )
    for name, part in parts.items():
        part.load_state_dict(payload[name])
    return _State(
        payload["step"], list(payload["curve_steps"]), [list(c) for c in payload["curve"]]
    )


def reconstruct(
    features: FeatureMap,
    targets: Tensor,
    config: ReconstructionConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> ReconstructionResult:
    """Invert ``features`` at each of ``targets`` (``(G, 3, S, S)`` in [0, 1], S =
    ``config.image_size``) with one generator per image; see the module docstring.

    ``features`` must be differentiable in its input and must not train anything itself
    (freeze the backbone: Adam sees the generators' parameters only). ``fingerprint``
    identifies ``features`` (e.g. the backbone's weights and the layer) in the checkpoint's
    key, together with the targets and ``config``; a checkpoint of another run is an error.
    """
    if targets.ndim != 4 or targets.shape[1] != 3:
        raise ConfigError(f"targets must be (G, 3, S, S), got {tuple(targets.shape)}")
    size = config.image_size
    if targets.shape[2:] != (size, size):
        raise ConfigError(f"targets are {tuple(targets.shape[2:])}, the crop size is {size}")
    device = torch.device(device)
    members = targets.shape[0]
    key = sha256_json(
        {
            "config": config.describe(),
            "targets": _tensor_digest(targets),
            "features": fingerprint,
            "device": device.type,
        }
    )
    started = time.perf_counter()
    targets = targets.to(device)
    with torch.no_grad(), autocast(device, config.precision):
        goal = features(targets).float().detach()
    code, generator = seeded_start(config, members)
    code, generator = code.to(device), generator.to(device).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.precision)
    parts: dict[str, Any] = {"generator": generator, "optimizer": optimizer, "scaler": scaler}
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    state, resumed_from = _State(curve=[[] for _ in range(members)]), None
    if path is not None and path.is_file():
        state = _load(path, parts, key)
        resumed_from = state.step
    first = state.step

    def image_of(gen_out: Tensor) -> Tensor:
        return crop(gen_out, size, config.crop)

    with progress_display(
        config.steps, "reconstruct", "step", initial=state.step, enabled=progress
    ) as bar:
        while state.step < config.steps:
            step = state.step + 1
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, config.precision):
                losses = _per_image_mse(features(image_of(generator(code))), goal)
            scaler.scale(losses.sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            values = losses.detach().cpu().tolist()
            state.step = step
            if (step - 1) % config.curve_every == 0 or step == config.steps:
                state.curve_steps.append(step)
                for curve, value in zip(state.curve, values, strict=True):
                    curve.append(value)
            if path is not None and (step % config.checkpoint_every == 0 or step == config.steps):
                _save(path, parts, state, key)
            bar.set_postfix(loss=f"{sum(values) / members:.4g}")
            bar.update(1)
            if on_step is not None:
                on_step(step, values)
    with torch.no_grad(), autocast(device, config.precision):
        outputs = generator(code).float()
        final = _per_image_mse(features(image_of(outputs)), goal)
    return ReconstructionResult(
        outputs=outputs.cpu(),
        crops=image_of(outputs).cpu(),
        final_loss=final.cpu().tolist(),
        curve_steps=list(state.curve_steps),
        curve=[list(c) for c in state.curve],
        resumed_from=resumed_from,
        steps_run=state.step - first,
        seconds=time.perf_counter() - started,
        parameters=count_parameters(generator) // members,
    )
