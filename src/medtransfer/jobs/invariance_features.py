"""The forward passes of the invariance job: features of clean images and of transformed
views, with a chosen input normalisation and BatchNorm statistics, resumable on disk.

Clean features normally come from the feature store (no forward pass here); these
functions serve what the store cannot hold: the views, and the original's train-mode
BatchNorm passes, whose features depend on the batch they were computed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from medtransfer.analysis.batchnorm import batchnorm_statistics
from medtransfer.analysis.transforms import ViewPlan
from medtransfer.compute import autocast
from medtransfer.fsutil import atomic_save_array
from medtransfer.models.backbone import Backbone
from medtransfer.progress import progress as show_progress


@dataclass(frozen=True)
class Network:
    """A backbone's trunk behind one input normalisation, on a device, in a precision."""

    backbone: Backbone
    normalize: nn.Module
    device: str
    precision: str

    def features(self, images: Tensor, batchnorm: str = "eval") -> np.ndarray:
        """``images`` (B, 3, S, S) in [0, 1] -> (B, D) float32, in one forward pass whose
        BatchNorm layers use ``batchnorm`` statistics (analysis.batchnorm)."""
        trunk = self.backbone.trunk.to(self.device)
        normalize = self.normalize.to(self.device)
        with (
            torch.inference_mode(),
            autocast(self.device, self.precision),
            batchnorm_statistics(trunk, batchnorm),
        ):
            return trunk(normalize(images.to(self.device))).float().cpu().numpy()


class _Items(torch.utils.data.Dataset[tuple[int, Tensor]]):
    """Item i -> (i, make(i)), decoded in DataLoader workers."""

    def __init__(self, count: int, make: Callable[[int], Tensor]) -> None:
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, self.make(index)


def _stream(
    count: int, make: Callable[[int], Tensor], workers: int
) -> Iterator[tuple[int, Tensor]]:
    loader = torch.utils.data.DataLoader(
        _Items(count, make), batch_size=None, num_workers=workers, shuffle=False
    )
    yield from loader


def clean_features(
    network: Network,
    paths: Sequence[Path],
    load: Callable[[Path], Image.Image],
    preprocess: Callable[[Image.Image], Tensor],
    *,
    batches: Sequence[np.ndarray],
    batchnorm: str,
    workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Features of ``paths[i]`` for every index of every batch, one forward pass per batch
    (so that ``batchnorm="batch"`` sees exactly that batch): (sum of batch sizes, D) float32
    in batch order."""
    order = np.concatenate(batches) if len(batches) else np.zeros(0, dtype=np.int64)
    images = _stream(len(order), lambda i: preprocess(load(paths[int(order[i])])), workers)
    out: list[np.ndarray] = []
    with show_progress(len(order), "clean images", "img", enabled=progress) as bar:
        for batch in batches:
            stacked = torch.stack([next(images)[1] for _ in range(len(batch))])
            out.append(network.features(stacked, batchnorm))
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, network.backbone.feature_dim), np.float32)


def view_features(
    network: Network,
    plan: ViewPlan,
    paths: Sequence[Path],
    load: Callable[[Path], Image.Image],
    folder: Path,
    *,
    batchnorm: str,
    batch_size: int,
    workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Features of the k views of every image: (n, k, D) float32.

    With ``batchnorm="eval"`` views of several images share forward passes of up to
    ``batch_size``; with ``batchnorm="batch"`` the k views of one image are one batch (the
    original's composition). Each finished image is saved under ``folder`` and read back by
    a later run (resume); ``folder/views.npy`` holds the whole array once complete."""
    final = folder / "views.npy"
    if final.is_file():
        return np.load(final)
    folder.mkdir(parents=True, exist_ok=True)
    k, n = len(plan.values), len(paths)
    saved = [folder / f"image-{i:05d}.npy" for i in range(n)]
    todo = [i for i in range(n) if not saved[i].is_file()]
    views = _stream(len(todo), lambda t: plan.views(load(paths[todo[t]]), todo[t]), workers)
    pending: list[tuple[int, Tensor]] = []
    done = (n - len(todo)) * k
    with show_progress(
        n * k, f"{plan.transform} views", "view", enabled=progress, initial=done
    ) as bar:
        for position, (_, stack) in enumerate(views):
            pending.append((todo[position], stack))
            full = sum(len(s) for _, s in pending) >= batch_size or batchnorm != "eval"
            if full or position == len(todo) - 1:
                _forward_pending(network, pending, saved, batchnorm, batch_size)
                bar.update(sum(len(s) for _, s in pending))
                pending = []
    out = np.stack([np.load(path) for path in saved])
    atomic_save_array(final, out)
    for path in saved:
        path.unlink(missing_ok=True)
    return out


def _forward_pending(
    network: Network,
    pending: list[tuple[int, Tensor]],
    saved: list[Path],
    batchnorm: str,
    batch_size: int,
) -> None:
    """Forward the views of the pending images and save each image's (k, D) features (in
    eval mode in passes of at most ``batch_size`` views, else one pass per image)."""
    if batchnorm != "eval":
        for index, stack in pending:
            atomic_save_array(saved[index], network.features(stack, batchnorm))
        return
    every = torch.cat([stack for _, stack in pending])
    features = np.concatenate(
        [network.features(every[i : i + batch_size]) for i in range(0, len(every), batch_size)]
    )
    start = 0
    for index, stack in pending:
        atomic_save_array(saved[index], features[start : start + len(stack)])
        start += len(stack)


def describe_items(names: Sequence[str], stats: Sequence[Any]) -> list[Any]:
    """What identifies the evaluated images in a cache key: names with file sizes and times."""
    return [[name, list(stat)] for name, stat in zip(names, stats, strict=True)]
