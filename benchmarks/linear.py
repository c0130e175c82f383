"""Linear-probe speed: (a) cold and (b) warm pipelines, (c) the solver alone.

(a)/(b) The original's whole linear procedure on a synthetic Shenzhen-layout tree -- images
decoded and pushed through the backbone TWICE (train/val, then trainval/test) without
``torch.no_grad()``, then the scikit-learn grid below -- against ``medtransfer linear``'s
job: (a) with an empty feature store (one extraction, torch solver), (b) with the features
already cached (a new grid, seed or protocol on the same model and data).

(c) The solver alone, on the same in-memory features:

The original's procedure (docs/original-study.md#linear) with scikit-learn -- one
``LogisticRegression(solver='lbfgs', warm_start=True, max_iter=100)`` refitted along the
45-value C grid (1e6 -> 1e-5) on train, scored on val, then refitted on train+val at the
chosen C -- against medtransfer's torch solver on the same objective:

* ``torch (parity)``: the same procedure and budget (tol 1e-4, max_iter 100, refit from the
  last grid point);
* ``torch (default)``: the protocol's defaults (max_iter 1000 so every fit converges,
  refit from the chosen C's solution).

Features are a seeded Gaussian mixture shaped like pooled backbone features: a low-rank
factor structure with decaying scales (ill-conditioned, like real features), an offset
(so the intercept matters), isotropic noise, and class means in the factor space. The
fit set is ``n_train`` x ``dim`` (3200 x 2048, 5 classes by default; ``--large``:
100,000 x 2048); val and test have ``n_train / 4`` rows each. Prints each solver's wall
time, the speed ratio, the chosen Cs and test accuracies.

``--device cuda`` runs the torch solvers on a GPU (scikit-learn stays on the CPU);
``--solvers`` picks some of them (``sklearn``, ``parity``, ``default``).

    python benchmarks/linear.py [--large] [--threads N] [--repeats R] [--skip-pipeline]
                                [--device cpu|cuda] [--solvers sklearn,parity,default]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from medtransfer.protocols.linear import C_GRID, LinearResult, linear_evaluation


def gaussian_mixture_features(
    n: int,
    dim: int = 2048,
    n_classes: int = 5,
    *,
    seed: int = 0,
    rank: int = 128,
    separation: float = 0.3,
    noise: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: features (n, dim) float32 and balanced labels (n,) int64.

    ``x = offset + (mu_y + z) * scales @ A + noise * e`` with ``A`` (rank, dim) fixed by
    ``seed`` (factor scales decay as ``1/sqrt(j)``), ``z, e`` standard normal and class
    means ``mu_y`` of norm ~``separation * sqrt(rank)`` in the factor space. Rows are
    generated in chunks, so memory stays at the output's size.
    """
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(rank, dim)) / np.sqrt(rank)
    scales = 1.0 / np.sqrt(np.arange(1, rank + 1))
    means = rng.normal(scale=separation, size=(n_classes, rank))
    offset = np.abs(rng.normal(size=dim)) * 0.5
    y = rng.permutation(np.arange(n) % n_classes)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 8192):
        rows = slice(start, min(start + 8192, n))
        count = rows.stop - rows.start
        latent = (means[y[rows]] + rng.normal(size=(count, rank))) * scales
        X[rows] = latent @ loadings + offset + noise * rng.normal(size=(count, dim))
    return X, y


@dataclass(frozen=True)
class Split:
    """Train (fit), val (selection) and test features with labels."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The six arrays in :func:`linear_evaluation`'s argument order."""
        return self.X_train, self.y_train, self.X_val, self.y_val, self.X_test, self.y_test


def make_split(n_train: int, dim: int, n_classes: int, seed: int = 0) -> Split:
    """``n_train`` fit rows, ``n_train // 4`` val and test rows, one distribution."""
    extra = n_train // 4
    X, y = gaussian_mixture_features(n_train + 2 * extra, dim, n_classes, seed=seed)
    cut = (n_train, n_train + extra)
    return Split(X[: cut[0]], y[: cut[0]], X[cut[0] : cut[1]], y[cut[0] : cut[1]],
                 X[cut[1] :], y[cut[1] :])  # fmt: skip


SOLVERS: dict[str, dict[str, Any]] = {
    "sklearn (original)": dict(solver="sklearn", max_iter=100, refit_init="last"),
    "torch (parity)": dict(solver="torch", max_iter=100, refit_init="last"),
    "torch (default)": dict(solver="torch"),
}


def solver_benchmark(
    split: Split,
    *,
    repeats: int = 1,
    threads: int | None = None,
    solvers: Sequence[str] = tuple(SOLVERS),
    device: str = "cpu",
) -> dict[str, tuple[float, LinearResult]]:
    """Run the linear protocol with each solver ``repeats`` times (interleaved, so machine
    load hits all alike) under ``threads`` CPU threads for torch and BLAS (None: as set);
    the torch solvers on ``device``. Returns ``{solver name: (best wall seconds, result)}``."""
    best: dict[str, tuple[float, LinearResult]] = {}
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            for _ in range(repeats):
                for name in solvers:
                    settings = dict(SOLVERS[name])
                    if settings["solver"] == "torch":
                        settings["device"] = device
                    start = time.perf_counter()
                    result = linear_evaluation(*split.arrays(), Cs=C_GRID, **settings)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize(device)
                    seconds = time.perf_counter() - start
                    if name not in best or seconds < best[name][0]:
                        best[name] = (seconds, result)
    finally:
        torch.set_num_threads(before)
    return best


def report(best: dict[str, tuple[float, LinearResult]]) -> list[str]:
    """One line per solver and the speed ratios against scikit-learn."""
    lines = []
    for name, (seconds, result) in best.items():
        lines.append(
            f"{name:19s} {seconds:8.2f} s   C = {result.chosen_C:<10.4g} "
            f"test acc {result.metrics['accuracy']:6.2f}%   "
            f"iterations {sum(result.n_iter):5d}   unconverged fits {result.unconverged}"
        )
    if "sklearn (original)" in best:
        reference = best["sklearn (original)"][0]
        for name, (seconds, _) in best.items():
            if name != "sklearn (original)":
                lines.append(f"speed-up of {name} over sklearn: {reference / seconds:.1f}x")
    return lines


def naive_features(backbone: torch.nn.Module, paths: list, preprocessing: Any) -> np.ndarray:
    """The original's extraction: eval mode, batches of 64, autograd left on (no no_grad)."""
    from medtransfer.data.transforms import ImageFiles

    loader = torch.utils.data.DataLoader(ImageFiles(paths, preprocessing), batch_size=64)
    backbone.eval()
    return np.concatenate([backbone(batch).detach().numpy() for batch in loader])


def pipeline_benchmark(per_class: int, image_size: int, model: str) -> list[str]:
    """Parts (a) and (b): seconds of the original's procedure and of medtransfer's job."""
    import tempfile
    from pathlib import Path

    from medtransfer.config import resolve_roots
    from medtransfer.data.catalog import resolve_dataset
    from medtransfer.data.manifest import build_manifest
    from medtransfer.data.synth.primitives import SynthOptions
    from medtransfer.data.synth.writers import synthesize
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.jobs.linear import LinearOptions, run_linear
    from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
    from medtransfer.models.loader import load_backbone

    with tempfile.TemporaryDirectory() as tmp:
        roots = resolve_roots(Path(tmp) / "data", Path(tmp) / "cache", Path(tmp) / "results")
        synthesize("shenzhencxr", roots.data, SynthOptions(per_class=per_class, size=96))
        preprocessing = Preprocessing(image_size=image_size, resize="shorter")

        start = time.perf_counter()
        manifest = build_manifest(resolve_dataset("shenzhencxr", roots.data))
        backbone = load_backbone(model, roots, progress=False)
        paths, labels = manifest.absolute_paths(), manifest.labels
        parts = {s: manifest.select(s) for s in ("train", "val", "test")}
        trainval = np.concatenate([parts["train"], parts["val"]])
        first = naive_features(backbone, [paths[i] for i in trainval], preprocessing)
        second = naive_features(
            backbone, [paths[i] for i in np.concatenate([trainval, parts["test"]])], preprocessing
        )
        n_train = len(parts["train"])
        original = linear_evaluation(
            first[:n_train], labels[parts["train"]], first[n_train:], labels[parts["val"]],
            second[len(trainval):], labels[parts["test"]], solver="sklearn",
        )  # fmt: skip
        original_s = time.perf_counter() - start

        options = (
            DataOptions("shenzhencxr"),
            ModelOptions(model),
            LinearOptions(image_size=image_size, bootstrap=0),
            RunOptions(device="cpu", progress=False),
        )
        start = time.perf_counter()
        cold = run_linear(roots, *options)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = run_linear(roots, *options)
        warm_s = time.perf_counter() - start
    assert cold.extracted and not warm.extracted
    return [
        f"pipeline: {len(paths)} images at {image_size} px, {model}, 45-value grid",
        f"original (2 extractions + sklearn)   {original_s:8.2f} s   C = "
        f"{original.chosen_C:<10.4g} test acc {original.metrics['accuracy']:6.2f}%",
        f"(a) medtransfer, empty store         {cold_s:8.2f} s   C = "
        f"{cold.record['chosen_C']:<10.4g} test acc {cold.metrics['accuracy']:6.2f}%   "
        f"speed-up {original_s / cold_s:.1f}x",
        f"(b) medtransfer, features cached     {warm_s:8.2f} s   "
        f"speed-up {original_s / warm_s:.1f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="100,000 x 2048 fit set")
    parser.add_argument("--n-train", type=int, default=None, help="fit rows (default 3200)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads, both solvers")
    parser.add_argument("--repeats", type=int, default=1, help="best of R interleaved runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pipeline", action="store_true", help="only part (c)")
    parser.add_argument("--per-class", type=int, default=150, help="(a)/(b): images per class")
    parser.add_argument("--image-size", type=int, default=112, help="(a)/(b): crop size")
    parser.add_argument("--model", default="random_r50", help="(a)/(b): backbone")
    parser.add_argument("--device", default="cpu", help="(c): device of the torch solvers")
    parser.add_argument(
        "--solvers", default="sklearn,parity,default", help="(c): which solvers, comma-separated"
    )
    args = parser.parse_args()
    short = {
        "sklearn": "sklearn (original)",
        "parity": "torch (parity)",
        "default": "torch (default)",
    }
    try:
        solvers = [short[name.strip()] for name in args.solvers.split(",") if name.strip()]
    except KeyError as exc:
        parser.error(f"--solvers: unknown {exc}; choose from {', '.join(short)}")
    if not args.skip_pipeline:
        for line in pipeline_benchmark(args.per_class, args.image_size, args.model):
            print(line)
        print()
    n_train = args.n_train or (100_000 if args.large else 3200)

    start = time.perf_counter()
    split = make_split(n_train, args.dim, args.classes, seed=args.seed)
    made = time.perf_counter() - start
    best = solver_benchmark(
        split, repeats=args.repeats, threads=args.threads, solvers=solvers, device=args.device
    )
    threads = args.threads or torch.get_num_threads()
    machine = platform.processor() or platform.machine()
    if args.device.startswith("cuda"):
        machine += f", torch solvers on {torch.cuda.get_device_name(args.device)}"
    print(f"machine: {machine}, {threads} threads")
    print(
        f"data: fit {n_train} x {args.dim}, val {len(split.y_val)}, test {len(split.y_test)}, "
        f"{args.classes} classes, float32 (generated in {made:.1f} s); grid of {len(C_GRID)} C"
    )
    print("(c) solver only:")
    for line in report(best):
        print(line)


if __name__ == "__main__":
    main()
