"""Feature-store overhead: what saving work as it goes costs over bare forward passes.

On one synthetic Shenzhen-layout tree and one backbone, in one run:

(a) bare forward passes, nothing written (``medtransfer.features.store.extract``);
(b) ``get_features`` into an empty store with the defaults (shards of one batch, finished
    shards saved every 30 s, then the complete store built in one rename);
(c) the same with a save after every batch (``flush_seconds=0``: the most a run can save);
(d) a resume that finds every shard saved (validating each chunk, then merging).

(a)-(c) run interleaved ``--repeats`` times (best of each kept), each store into an empty
folder. Prints the wall times and (b) and (c) relative to (a).

    python benchmarks/store.py [--per-class 150] [--image-size 64] [--repeats 3]
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
from medtransfer.data.transforms import Preprocessing
from medtransfer.features import store as store_module
from medtransfer.features.store import extract, get_features
from medtransfer.models.loader import load_backbone


class _StopBeforeMerge(Exception):
    """Stops a benchmark extraction after every shard is saved, before the merge."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150, help="images per class (2 classes)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="random_r18")
    parser.add_argument("--repeats", type=int, default=3, help="best of R interleaved runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        roots = resolve_roots(Path(tmp) / "data", Path(tmp) / "cache", Path(tmp) / "results")
        synthesize("shenzhencxr", roots.data, SynthOptions(per_class=args.per_class, size=96))
        manifest = build_manifest(resolve_dataset("shenzhencxr", roots.data))
        preprocessing = Preprocessing(image_size=args.image_size, resize="shorter")
        backbone = load_backbone(args.model, roots, progress=False)
        common = {
            "weights_sha256": backbone.weights_sha256,
            "normalization": backbone.normalization,
            "arch": backbone.spec.arch,
            "batch_size": args.batch_size,
            "progress": False,
        }

        def store(folder: str, **kw: float) -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            found = get_features(
                backbone, manifest, preprocessing, Path(tmp) / folder, **common, **kw
            )
            return time.perf_counter() - start, np.asarray(found.features)

        def bare_passes() -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            features = extract(
                backbone,
                manifest.absolute_paths(),
                preprocessing,
                batch_size=args.batch_size,
                progress=False,
            )
            return time.perf_counter() - start, features

        extract(backbone, manifest.absolute_paths()[:8], preprocessing, progress=False)  # warm-up
        best: dict[str, float] = {}
        for repeat in range(args.repeats):
            runs = {
                "bare": bare_passes(),
                "default": store(f"default-{repeat}"),
                "every": store(f"every-{repeat}", flush_seconds=0.0),
            }
            for name, (seconds, _) in runs.items():
                best[name] = min(best.get(name, seconds), seconds)
        (_, bare), (_, default), (_, every) = runs.values()
        bare_s, default_s, every_s = best["bare"], best["default"], best["every"]

        # (d): a partial store with every shard saved (an extraction stopped just before
        # its merge), then the run that resumes it
        real_finish = store_module._finish

        def stop_before_merge(*_args: object, **_kwargs: object) -> str:
            raise _StopBeforeMerge

        store_module._finish = stop_before_merge
        try:
            store("resume", flush_seconds=0.0)
        except _StopBeforeMerge:
            pass
        finally:
            store_module._finish = real_finish
        n_chunks = len(list((Path(tmp) / "resume").glob("*.partial/rows-*.npy")))
        resume_s, resumed = store("resume")
        assert np.array_equal(bare, default) and np.array_equal(default, every)
        assert np.array_equal(resumed, default)

    print(f"machine: {device_name('cpu')}, {torch.get_num_threads()} threads")
    print(
        f"data: {len(manifest)} images at {args.image_size}px, {args.model}, "
        f"batch {args.batch_size}; best of {args.repeats}; all four give the same features"
    )
    rows = [
        ("(a) bare forward passes, nothing written", bare_s, ""),
        ("(b) store, defaults (save every 30 s)", default_s, f"{default_s / bare_s:.2f}x (a)"),
        ("(c) store, a save after every batch", every_s, f"{every_s / bare_s:.2f}x (a)"),
        (f"(d) resume, every shard saved ({n_chunks} chunks)", resume_s, ""),
    ]
    for label, seconds, ratio in rows:
        print(f"{label:<45} {seconds:7.2f} s  {ratio}")


if __name__ == "__main__":
    main()
