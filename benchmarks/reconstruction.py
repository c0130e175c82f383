"""Reconstruction speed: one image at a time (the original) against several at once.

(a) one image: one generator and a backbone batch of one, as the original ran;
(b) G images at once: G generators trained side by side as one grouped module, the
    backbone on a batch of G crops (``medtransfer reconstruct --images G``).

Both use the study's settings (a 32 x 256 x 256 code, the 2,606,763-parameter generator,
224 crop, ``layer4``) unless told otherwise. The time per step is measured as the
difference between a run of 1 + N steps and a run of 1 step, so set-up (the target's
features, the generator's construction) is left out. Prints steps per second for (a),
image-steps per second for (b), their ratio, and what (b)'s rate means for the paper's
grid (13 models x 10 images x 3001 steps). Runs unchanged on a GPU (``--device cuda``).

    python benchmarks/reconstruction.py [--model random_r50] [--images 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medtransfer.analysis.dip import SkipConfig
from medtransfer.analysis.reconstruction import ReconstructionConfig, reconstruct
from medtransfer.compute import device_name, resolve_device, resolve_precision
from medtransfer.config import resolve_roots
from medtransfer.models.intermediate import intermediate_outputs, resolve_layer
from medtransfer.models.loader import load_backbone

PAPER_RUNS = 13 * 10  # models x sample images
PAPER_STEPS = 3001


def _seconds_per_step(
    features: Any, targets: torch.Tensor, config: ReconstructionConfig, *, device: str, steps: int
) -> float:
    """Wall seconds per optimiser step for ``targets`` together (set-up excluded)."""

    def timed(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        reconstruct(
            features, targets, dataclasses.replace(config, steps=n), device=device, progress=False
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(1)  # warm-up: allocator, cuDNN algorithm choice
    return (timed(1 + steps) - timed(1)) / steps


def measure(
    *,
    model: str = "random_r50",
    images: int = 4,
    steps: int = 3,
    size: int = 224,
    code_size: int = 256,
    depth: int = 6,
    layer: str = "layer4",
    device: str = "auto",
    precision: str = "auto",
    grouped: bool | None = None,
) -> dict[str, Any]:
    """Steps per second for one image and image-steps per second for ``images`` at once,
    and the hours the paper's grid would take at the latter rate (a dict of figures).
    Callable from a GPU check script."""
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        roots = resolve_roots(Path(tmp) / "d", Path(tmp) / "c", Path(tmp) / "r")
        backbone = load_backbone(model, roots, progress=False).requires_grad_(False).to(device)
    tapped = resolve_layer(backbone.spec.arch, layer)

    def features(batch: torch.Tensor) -> torch.Tensor:
        return intermediate_outputs(backbone, batch, [tapped])[tapped]

    config = ReconstructionConfig(
        image_size=size,
        code_size=code_size,
        precision=precision,
        generator=SkipConfig().shallower(depth),
        grouped=grouped,
    )
    targets = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    one = _seconds_per_step(features, targets[:1], config, device=device, steps=steps)
    together = _seconds_per_step(features, targets, config, device=device, steps=steps)
    rate_one, rate_together = 1 / one, images / together
    return {
        "device": device,
        "device_name": device_name(device),
        "precision": precision,
        "model": model,
        "images": images,
        "one_steps_per_s": rate_one,
        "together_image_steps_per_s": rate_together,
        "speedup": rate_together / rate_one,
        "paper_grid_hours": PAPER_RUNS * PAPER_STEPS / rate_together / 3600,
        "paper_grid_hours_one_at_a_time": PAPER_RUNS * PAPER_STEPS / rate_one / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random_r50")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="crop the backbone sees")
    parser.add_argument("--code-size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument(
        "--grouped",
        choices=("auto", "yes", "no"),
        default="auto",
        help="several generators' convolutions as one grouped call (yes), one call per "
        "member (no), or grouped on CUDA only (auto)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = measure(
        model=args.model,
        images=args.images,
        steps=args.steps,
        size=args.size,
        code_size=args.code_size,
        depth=args.depth,
        layer=args.layer,
        device=args.device,
        precision=args.precision,
        grouped={"auto": None, "yes": True, "no": False}[args.grouped],
    )
    print(
        f"{figures['device']} ({figures['device_name']}), {figures['precision']}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, {args.model}, "
        f"{args.size}px crop of a {args.code_size}px code, generator depth {args.depth}, "
        f"grouped convolutions: {args.grouped}"
    )
    print(f"(a) one image:          {figures['one_steps_per_s']:.3f} steps/s")
    print(
        f"(b) {args.images} images at once: {figures['together_image_steps_per_s']:.3f} "
        f"image-steps/s  ({figures['speedup']:.2f}x)"
    )
    print(
        f"paper grid ({PAPER_RUNS} reconstructions x {PAPER_STEPS} steps): "
        f"{figures['paper_grid_hours']:.1f} h at (b)'s rate, "
        f"{figures['paper_grid_hours_one_at_a_time']:.1f} h one at a time"
    )


if __name__ == "__main__":
    main()
