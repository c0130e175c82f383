"""Feature-store test helpers: a cheap backbone that counts (across processes too), a small
synthetic manifest, and one call of the store with the test's fixed key ingredients."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import Manifest, build_manifest
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import FeatureSet, get_features

PREPROCESSING = Preprocessing(image_size=12)


class CountingNet(torch.nn.Module):
    """Mean colour per channel (B, 3) through a BatchNorm that must stay in eval mode;
    ``feature_dim`` 3, as a :class:`~medtransfer.models.backbone.Backbone` states its width.

    ``seen``: images forwarded by this object; ``log``: a file that gets one line per
    batch ("<pid> <images>"), so a test can count the forward passes of other processes
    (even killed ones); ``delay``: seconds slept per batch; ``stop_after``: raise
    KeyboardInterrupt (an interrupt) before a batch once that many images were seen.
    """

    def __init__(
        self, *, log: Path | None = None, delay: float = 0.0, stop_after: int | None = None
    ) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(3)
        self.feature_dim = 3
        self.seen = 0
        self.log = log
        self.delay = delay
        self.stop_after = stop_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stop_after is not None and self.seen >= self.stop_after:
            raise KeyboardInterrupt
        if self.delay:
            time.sleep(self.delay)
        self.seen += len(x)
        if self.log is not None:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{os.getpid()} {len(x)}\n".encode())
            finally:
                os.close(fd)
        return self.bn(x.mean(dim=(2, 3)))


def logged_images(log: Path) -> dict[int, int]:
    """Images forwarded per pid, from a :class:`CountingNet` log."""
    counts: dict[int, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            pid, n = map(int, line.split())
            counts[pid] = counts.get(pid, 0) + n
    return counts


def tiny_manifest(root: Path, per_class: int = 5, size: int = 16) -> Manifest:
    """A synthetic Shenzhen-layout manifest of ``2 * per_class`` images of ``size`` px."""
    synthesize("shenzhencxr", root, SynthOptions(per_class=per_class, size=size))
    return build_manifest(resolve_dataset("shenzhencxr", root))


def store_features(net: torch.nn.Module, manifest: Manifest, root: Path, **kw: Any) -> FeatureSet:
    """:func:`get_features` with the tests' fixed key ingredients, without progress."""
    kw.setdefault("progress", False)
    return get_features(
        net,
        manifest,
        kw.pop("preprocessing", PREPROCESSING),
        root,
        weights_sha256="w" * 64,
        normalization="none",
        arch="test",
        **kw,
    )
