"""Few-shot speed: the original's method against medtransfer's, same data, same episodes.

(a) original: the images are decoded and preprocessed once and held in memory (as the
    original did for small datasets), then EVERY episode pushes its n_way x (n_support +
    n_query) images through the backbone;
(b) medtransfer: one extraction into an empty feature store, then vectorised episodes over
    the cached features.

Both score the same episodes (one seeded draw). Prints both wall times, the ratio, and the
two accuracies (which agree up to float noise in the features).

    python benchmarks/fewshot.py [--episodes 600] [--image-size 32] [--per-class 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medtransfer.compute import device_name
from medtransfer.config import resolve_roots
from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import build_manifest
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.data.transforms import ImageFiles, Preprocessing
from medtransfer.features.store import get_features
from medtransfer.models.loader import load_backbone
from medtransfer.protocols.fewshot import episode_accuracies, sample_episodes, summarize


def original_method(backbone, images: torch.Tensor, episodes) -> np.ndarray:
    """Per-episode forward passes, as the original's ProtoNet loop did. images: (N,3,S,S)."""
    accuracies = []
    n_way, n_support = episodes.support.shape[1:]
    n_query = episodes.query.shape[2]
    target = torch.arange(n_way).repeat_interleave(n_query)
    with torch.inference_mode():
        for e in range(episodes.n_episodes):
            batch = np.concatenate([episodes.support[e].ravel(), episodes.query[e].ravel()])
            z = backbone(images[batch]).double()
            support = z[: n_way * n_support].view(n_way, n_support, -1).mean(1)
            query = z[n_way * n_support :]
            dists = ((query[:, None, :] - support[None, :, :]) ** 2).sum(-1)
            accuracies.append((dists.argmin(1) == target).double().mean().item())
    return np.array(accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--n-way", type=int, default=2)
    parser.add_argument("--n-support", type=int, default=20)
    parser.add_argument("--n-query", type=int, default=15)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="random_r18")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        roots = resolve_roots(Path(tmp) / "data", Path(tmp) / "cache", Path(tmp) / "results")
        synthesize("shenzhencxr", roots.data, SynthOptions(per_class=args.per_class, size=64))
        manifest = build_manifest(resolve_dataset("shenzhencxr", roots.data))
        preprocessing = Preprocessing(image_size=args.image_size, resize="square")
        backbone = load_backbone(args.model, roots, progress=False)
        episodes = sample_episodes(
            manifest.labels,
            n_way=args.n_way,
            n_support=args.n_support,
            n_query=args.n_query,
            n_episodes=args.episodes,
            seed=0,
        )

        start = time.perf_counter()
        dataset = ImageFiles(manifest.absolute_paths(), preprocessing)
        images = torch.stack([dataset[i] for i in range(len(dataset))])
        naive_acc = original_method(backbone.eval(), images, episodes)
        naive_s = time.perf_counter() - start

        start = time.perf_counter()
        features = get_features(
            backbone,
            manifest,
            preprocessing,
            roots.cache / "features",
            weights_sha256=backbone.weights_sha256,
            normalization=backbone.normalization,
            arch=backbone.spec.arch,
            progress=False,
        )
        fast_acc = episode_accuracies(features.features, episodes)
        fast_s = time.perf_counter() - start

    per_episode = args.n_way * (args.n_support + args.n_query)
    print(f"machine: {device_name('cpu')}, {torch.get_num_threads()} threads")
    print(
        f"data: {len(manifest)} images, {args.image_size}px, model {args.model}; "
        f"{args.episodes} episodes of {args.n_way}-way {args.n_support}-shot "
        f"({per_episode} images each)"
    )
    print(
        f"(a) original (forward pass per episode): {naive_s:8.2f} s  {summarize(naive_acc).line()}"
    )
    print(f"(b) medtransfer (extract once + cache):  {fast_s:8.2f} s  {summarize(fast_acc).line()}")
    print(f"speed-up: {naive_s / fast_s:.1f}x")
    print(f"episodes with identical accuracy: {(naive_acc == fast_acc).mean() * 100:.1f}%")


if __name__ == "__main__":
    main()
