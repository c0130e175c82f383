"""Saliency speed: the original's batch-1 occlusion loop against medtransfer's batched one.

Same image, same model, same occlusion geometry, same map:

(a) original: for every window a copy of the image is occluded and pushed through the
    network alone (batch of one, under ``no_grad``), its feature brought back to NumPy and
    scored, as ``saliency.py`` did; the network in train mode (the original never called
    ``eval()``), so BatchNorm uses each single image's statistics;
(b) medtransfer: ``--batch-size`` occluded copies per forward pass under ``inference_mode``,
    BatchNorm emulating those single-image statistics per sample (``--preset original``'s
    ``--batchnorm per-sample``).

Prints both wall times, the ratio, the largest difference between the two maps and both
attentive diffusions. The default geometry is the original's (242-px image, 10-px patch:
54,289 windows); on a CPU use a smaller image (e.g. ``--image-size 64``), since (a) runs one
forward pass per window. Runs unchanged on a GPU (``--device auto`` picks it).

    python benchmarks/saliency.py [--model random_r50] [--image-size 242] [--patch 10]
                                  [--batch-size 256] [--device auto] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medtransfer.analysis.batchnorm import batchnorm_statistics
from medtransfer.analysis.saliency import attentive_diffusion, occlusion_scores, saliency_map
from medtransfer.compute import autocast, device_name, resolve_device
from medtransfer.config import resolve_roots
from medtransfer.data.synth.primitives import chest_radiograph
from medtransfer.data.transforms import Preprocessing
from medtransfer.models.loader import load_backbone


def original_loop(trunk: torch.nn.Module, image: torch.Tensor, size: int) -> np.ndarray:
    """The original's compute_saliency_map: one forward pass per window, train mode."""
    model = copy.deepcopy(trunk).train()
    device = image.device
    height, width = image.shape[1:]
    window = torch.zeros((image.size(0), size, size), device=device)
    scores = np.zeros((height, width))
    with torch.no_grad():
        reference = model(image.unsqueeze(0)).squeeze(0).cpu().numpy()
    magnitude = np.sqrt((reference**2).sum())
    for i in range(1 + height - size):
        for j in range(1 + width - size):
            occluded = image.clone()
            occluded[:, i : i + size, j : j + size] = window
            with torch.no_grad():
                feature = model(occluded.unsqueeze(0)).squeeze(0).cpu().numpy()
            scores[i : i + size, j : j + size] += (
                np.sqrt(((reference - feature) ** 2).sum()) / magnitude
            )
    scores /= size**2
    return scores[size - 1 : height - size + 1, size - 1 : width - size + 1]


def batched(trunk: torch.nn.Module, image: torch.Tensor, size: int, batch_size: int) -> np.ndarray:
    """medtransfer's occlusion: batched, inference mode, per-sample BatchNorm statistics."""
    with batchnorm_statistics(trunk, "per-sample"):
        scores = occlusion_scores(trunk, image, patch=size, batch_size=batch_size)
    return saliency_map(scores, tuple(image.shape[1:]), patch=size)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    model: str, image_size: int, patch: int, batch_size: int, device: str
) -> dict[str, Any]:
    """Run both on one synthetic chest radiograph; returns times, ratio and agreement."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        backbone = load_backbone(model, resolve_roots(base / "d", base / "c", base / "r"))
    picture = chest_radiograph(np.random.default_rng(0), 320, True)
    rgb = Image.fromarray((picture * 255).astype(np.uint8)).convert("RGB")
    pixels = Preprocessing(image_size, resize="shorter")(rgb)
    trunk = backbone.trunk.to(device).eval()
    with autocast(device, "fp32"):  # true float32 on a GPU (no TF32) for both, as the job
        return _compare(trunk, backbone, pixels, image_size, patch, batch_size, device)


def _compare(
    trunk: torch.nn.Module,
    backbone: torch.nn.Module,
    pixels: torch.Tensor,
    image_size: int,
    patch: int,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    with torch.inference_mode():
        image = backbone.normalize.to(device)(pixels[None].to(device))[0]
    with torch.inference_mode(), batchnorm_statistics(trunk, "per-sample"):
        trunk(image[None].expand(min(batch_size, 8), -1, -1, -1))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    ours = batched(trunk, image, patch, batch_size)
    synchronize(device)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = original_loop(trunk, image.clone(), patch)
    synchronize(device)
    theirs_s = time.perf_counter() - start
    windows = (image_size - patch + 1) ** 2
    return {
        "windows": windows,
        "original_s": theirs_s,
        "medtransfer_s": ours_s,
        "ratio": theirs_s / ours_s,
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "ad_original": attentive_diffusion(theirs),
        "ad_medtransfer": attentive_diffusion(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random_r50")
    parser.add_argument("--image-size", type=int, default=242)
    parser.add_argument("--patch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"{args.model}, {args.image_size}-px image, {args.patch}-px patch, batch {args.batch_size}"
    )
    result = measure(args.model, args.image_size, args.patch, args.batch_size, device)
    print(f"windows: {result['windows']}")
    print(f"(a) original batch-1 loop: {result['original_s']:.2f} s")
    print(f"(b) medtransfer batched:   {result['medtransfer_s']:.2f} s")
    print(f"speed-up: {result['ratio']:.1f}x")
    print(f"max |map difference|: {result['max_abs_diff']:.2e}")
    print(
        f"attentive diffusion: {result['ad_original']:.2f}% (a), "
        f"{result['ad_medtransfer']:.2f}% (b)"
    )


if __name__ == "__main__":
    main()
