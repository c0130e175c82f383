"""Synthetic data for a grid that asks for it (``synthetic:``): small trees in the
datasets' published layouts, written once into the cache and used as the data root of
every cell (the real data root is never written to).

The trees live in ``<cache>/sweep-synthetic/<settings hash>/<dataset folder>``; each
dataset's tree is written under a temporary name and renamed into place, so two sweeps
that start together never see half a tree (the second rename loses and is discarded).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from medtransfer.config import Roots
from medtransfer.fsutil import sha256_json
from medtransfer.sweep.grid import Synthetic


def synthetic_root(cache: Path, settings: Synthetic) -> Path:
    """The data root of the synthetic trees made with ``settings``."""
    return Path(cache) / "sweep-synthetic" / sha256_json(asdict(settings))[:12]


def ensure_synthetic(roots: Roots, settings: Synthetic, datasets: Iterable[str]) -> Path:
    """Write the trees of ``datasets`` that are not there yet under the synthetic data root
    of ``settings`` (in ``roots.cache``); returns that root."""
    from medtransfer.data.catalog import get_dataset_spec
    from medtransfer.data.synth.primitives import SynthOptions
    from medtransfer.data.synth.writers import synthesize

    root = synthetic_root(roots.cache, settings)
    root.mkdir(parents=True, exist_ok=True)
    options = SynthOptions(per_class=settings.per_class, size=settings.size, seed=settings.seed)
    for name in datasets:
        folder = get_dataset_spec(name).folder
        if (root / folder).is_dir():
            continue
        scratch = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=root))
        try:
            synthesize(name, scratch, options)
            try:
                os.rename(scratch / folder, root / folder)
            except OSError:
                if not (root / folder).is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return root
