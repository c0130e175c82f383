"""One check of every CUDA path, on synthetic data, ready for the day a GPU is lent.

Each check runs a path the way the toolkit runs it, compares what it computes with the
CPU in float32 on a few inputs (tolerances per precision below), measures its speed, and
adds rows to one table:

* extraction (``features.store.extract``) of a random ResNet-50 at 224 px in fp32, bf16
  and fp16 against CPU fp32 on 8 images, and its throughput in images/s with
  channels_last off and on;
* fine-tuning: one training step at the training precision (fp16 AMP with its gradient
  scaler on a GPU) against CPU fp32 (loss and gradient), then 50 steps of
  ``protocols.finetune.finetune`` with AMP on 64 synthetic images, batch 32 (steps/s,
  finite test metric);
* the linear probe's torch solver on the device against the CPU on the same features
  (chosen C, test accuracy), then ``benchmarks/linear.py --large``'s solver part on the
  device (100,000 x 2048 features, 45 C values);
* saliency (``benchmarks/saliency.py``): batched occlusion against the batch-1 loop, same
  map, with the speed-up; invariance (``benchmarks/invariance.py``): the vectorised scores
  against the per-pair loop and a float64 reference, with the speed-up.

On a GPU the whole script is meant to finish well under 8 minutes. Without one (or with
``--cpu-smoke``) it runs every check on the CPU at toy sizes (ResNet-18 at 32 px, 3
fine-tuning steps, a small linear problem) in seconds, so the test suite runs it; the
figures then say nothing about speed. To add a check (an analysis: saliency, invariance,
reconstruction), write ``check_<name>(ctx) -> list[Row]`` and append it to :data:`CHECKS`.

    python benchmarks/gpu_check.py [--cpu-smoke] [--device cuda:0] [--with-sklearn]

Exit status: 0 when every row is ``ok`` (or ``skip``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/linear.py

from medtransfer.compute import autocast, resolve_precision
from medtransfer.config import resolve_roots
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import extract
from medtransfer.models.loader import load_backbone
from medtransfer.textable import format_table

#: Largest relative L2 error of a feature vector (or loss, gradient) against CPU fp32.
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 1e-2}


@dataclass(frozen=True)
class Row:
    """One line of the table: ``check``, ``setting``, what it measured (``result``), how
    it compares with CPU fp32 (``accuracy``), and ``status`` (ok, FAIL, skip)."""

    check: str
    setting: str
    result: str
    accuracy: str
    status: str


@dataclass
class Context:
    """What every check shares: the device, whether this is the CPU smoke run, the sizes,
    a folder of synthetic images, and the roots random models are built under."""

    device: str
    smoke: bool
    folder: Path
    arch: str = "random_r50"
    image_size: int = 224
    batch: int = 64
    warmup_batches: int = 2
    timed_batches: int = 20
    finetune_steps: int = 50
    with_sklearn: bool = False
    images: list[Path] = field(default_factory=list)
    built: dict[str, torch.nn.Module] = field(default_factory=dict)

    def backbone(self, device: str = "cpu") -> torch.nn.Module:
        """A fresh copy of the seeded random backbone on ``device`` (built once)."""
        if "cpu" not in self.built:
            roots = resolve_roots(self.folder / "data", self.folder / "cache", self.folder / "out")
            self.built["cpu"] = load_backbone(self.arch, roots, progress=False)
        return copy.deepcopy(self.built["cpu"]).to(device)


Check = Callable[[Context], list[Row]]


def _relative(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Largest relative L2 error of the rows of ``a`` against ``b`` (both (N, D))."""
    a64 = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b64 = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if a64.ndim == 1:
        a64, b64 = a64[None], b64[None]
    return float(((a64 - b64).norm(dim=1) / b64.norm(dim=1).clamp_min(1e-30)).max())


def _verdict(error: float, precision: str) -> tuple[str, str]:
    tolerance = TOLERANCE[precision]
    status = "ok" if math.isfinite(error) and error <= tolerance else "FAIL"
    return f"rel err {error:.1e} (tol {tolerance:.0e})", status


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _precisions(device: str) -> list[str]:
    """fp32, bf16 (where the GPU has it) and fp16."""
    bf16 = not device.startswith("cuda") or torch.cuda.is_bf16_supported()
    return ["fp32", *(["bf16"] if bf16 else []), "fp16"]


# --------------------------------------------------------------------------- checks


def check_extraction_accuracy(ctx: Context) -> list[Row]:
    """The store's extraction on the device in each precision against CPU fp32."""
    preprocessing = Preprocessing(ctx.image_size, resize="shorter")
    images = ctx.images[:8]
    reference = extract(ctx.backbone("cpu"), images, preprocessing, progress=False)
    backbone = ctx.backbone(ctx.device)
    rows = []
    for precision in _precisions(ctx.device):
        features = extract(
            backbone, images, preprocessing, device=ctx.device, precision=precision,
            batch_size=len(images), progress=False,
        )  # fmt: skip
        accuracy, status = _verdict(_relative(features, reference), precision)
        rows.append(
            Row(
                f"extract {ctx.arch}",
                f"{precision}, {len(images)} images",
                "-",
                accuracy,
                status,
            )
        )
    return rows


def check_extraction_throughput(ctx: Context) -> list[Row]:
    """Images/s of the backbone on synthetic batches, per precision, channels_last off/on."""
    rows = []
    for precision in _precisions(ctx.device):
        for channels_last in (False, True):
            backbone = ctx.backbone(ctx.device).eval()
            batch = torch.rand(ctx.batch, 3, ctx.image_size, ctx.image_size, device=ctx.device)
            if channels_last:
                backbone = backbone.to(memory_format=torch.channels_last)
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(ctx.device, precision):
                for _ in range(ctx.warmup_batches):  # cuDNN autotuning, allocations
                    backbone(batch)
                _synchronize(ctx.device)
                start = time.perf_counter()
                for _ in range(ctx.timed_batches):
                    output = backbone(batch)
                _synchronize(ctx.device)
                seconds = time.perf_counter() - start
            finite = bool(torch.isfinite(output).all())
            rate = ctx.batch * ctx.timed_batches / seconds
            rows.append(
                Row(
                    f"throughput {ctx.arch} {ctx.image_size}px",
                    f"{precision}, channels_last {'on' if channels_last else 'off'}",
                    f"{rate:.0f} img/s",
                    "finite" if finite else "NaN/inf",
                    "ok" if finite else "FAIL",
                )
            )
    return rows


def _training_step(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: str,
    precision: str,
) -> tuple[float, torch.Tensor]:  # fmt: skip
    """Loss and the flat gradient of one step (fp16: scaled, then unscaled as AMP does)."""
    from medtransfer.compute import grad_scaler

    model.train().to(device)
    model.zero_grad(set_to_none=True)
    scaler = grad_scaler(device, precision)
    with autocast(device, precision):
        loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
    scaler.scale(loss).backward()
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    grads = [p.grad.detach().float().flatten().cpu() / scale for p in model.parameters()]
    return float(loss.detach()), torch.cat(grads)


def check_finetune(ctx: Context) -> list[Row]:
    """One AMP training step against CPU fp32, then ``finetune`` for the configured steps."""
    from medtransfer.protocols.finetune import build_model, finetune
    from medtransfer.protocols.finetune_config import FinetuneConfig
    from medtransfer.protocols.finetune_data import FinetuneData, ImageSplit

    precision = resolve_precision("auto", ctx.device, training=True)
    model = build_model(ctx.backbone("cpu"), 2, seed=0)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, ctx.image_size, ctx.image_size, generator=generator)
    labels = torch.arange(4) % 2
    # BatchNorm in train mode updates running statistics: each step gets its own copy
    loss_ref, grad_ref = _training_step(copy.deepcopy(model), images, labels, "cpu", "fp32")
    loss, grad = _training_step(copy.deepcopy(model), images, labels, ctx.device, precision)
    error = max(abs(loss - loss_ref) / abs(loss_ref), _relative(grad, grad_ref))
    accuracy, status = _verdict(error, precision)
    rows = [Row("finetune step", f"{precision}, loss and gradient", f"loss {loss:.4f}",
                accuracy, status)]  # fmt: skip

    split = ImageSplit(list(ctx.images), [i % 2 for i in range(len(ctx.images))], _load_rgb)
    data = FinetuneData(
        split, split, split, 2, eval_transform=lambda size: Preprocessing(size, "shorter")
    )
    config = FinetuneConfig(
        steps=ctx.finetune_steps, batch_size=min(ctx.batch, 32), image_size=ctx.image_size,
        precision=precision, eval_every=ctx.finetune_steps,
    )  # fmt: skip
    start = time.perf_counter()
    result = finetune(ctx.backbone("cpu"), data, config, device=ctx.device, progress=False)
    seconds = time.perf_counter() - start
    finite = all(math.isfinite(v) for v in result.metrics.values())
    rows.append(
        Row(
            "finetune",
            f"{ctx.finetune_steps} steps, {precision}, batch {config.batch_size}",
            f"{result.steps_run / seconds:.2f} steps/s",
            "metrics finite" if finite else "NaN metric",
            "ok" if finite and result.steps_run == ctx.finetune_steps else "FAIL",
        )
    )
    return rows


def _load_rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def check_linear(ctx: Context) -> list[Row]:
    """The torch solver on the device against the CPU, then linear.py --large's solvers."""
    import linear as linear_benchmark
    from medtransfer.protocols.linear import C_GRID, linear_evaluation

    small = linear_benchmark.make_split(400 if ctx.smoke else 3200, 64 if ctx.smoke else 512, 3)
    cpu = linear_evaluation(*small.arrays(), Cs=C_GRID, solver="torch", device="cpu")
    here = linear_evaluation(*small.arrays(), Cs=C_GRID, solver="torch", device=ctx.device)
    same_C = here.chosen_C == cpu.chosen_C
    gap = abs(here.metrics["accuracy"] - cpu.metrics["accuracy"])
    one_image = 100 / len(small.y_test)
    rows = [
        Row(
            "linear torch solver",
            f"fit {len(small.y_train)} x {small.X_train.shape[1]}",
            f"C {here.chosen_C:.3e}, acc {here.metrics['accuracy']:.2f}%",
            f"same C: {same_C}, acc gap {gap:.2f} (tol {one_image:.2f})",
            "ok" if same_C and gap <= one_image + 1e-9 else "FAIL",
        )
    ]
    n_train, dim = (2000, 64) if ctx.smoke else (100_000, 2048)
    large = linear_benchmark.make_split(n_train, dim, 5)
    solvers = ["torch (parity)", "torch (default)"]
    if ctx.with_sklearn:
        solvers.insert(0, "sklearn (original)")
    best = linear_benchmark.solver_benchmark(large, solvers=solvers, device=ctx.device)
    for name, (seconds, result) in best.items():
        rows.append(
            Row(
                "linear.py --large" if not ctx.smoke else "linear.py (small)",
                f"{name}, fit {n_train} x {dim}",
                f"{seconds:.1f} s, C {result.chosen_C:.3e}",
                f"acc {result.metrics['accuracy']:.2f}%, unconverged {result.unconverged}",
                "ok" if math.isfinite(result.metrics["accuracy"]) else "FAIL",
            )
        )
    return rows


def check_saliency(ctx: Context) -> list[Row]:
    """benchmarks/saliency.py: batched occlusion (per-sample BatchNorm) against the
    original's batch-1 train-mode loop on the device, same map (ResNet-18; 96 px, 10-px
    patch: 7,569 windows; smoke: 33 px, 16-px patch)."""
    import saliency as saliency_benchmark

    size, patch = (33, 16) if ctx.smoke else (96, 10)
    result = saliency_benchmark.measure("random_r18", size, patch, 256, ctx.device)
    diff = result["max_abs_diff"]
    return [
        Row(
            "saliency",
            f"random_r18 {size}px, patch {patch}, {result['windows']} windows",
            f"{result['ratio']:.1f}x ({result['original_s']:.1f} s vs "
            f"{result['medtransfer_s']:.1f} s)",
            f"max map diff {diff:.1e} (tol 1e-05)",
            "ok" if math.isfinite(diff) and diff <= 1e-5 else "FAIL",
        )
    ]


def check_invariance(ctx: Context) -> list[Row]:
    """benchmarks/invariance.py: the vectorised scores on the device against the original's
    per-pair loop and a float64 per-pair reference (D = 2048, 20 images x 256 views, 4,000
    clean images; smoke: D = 64, 2 images x 16 views)."""
    import invariance as invariance_benchmark

    n_stats, images, k, dim = (200, 2, 16, 64) if ctx.smoke else (4000, 20, 256, 2048)
    r = invariance_benchmark.measure(n_stats, images, k, dim, ctx.device)
    exact = max(r["diff_exact_similarity"], r["diff_exact_distance"])
    original = max(r["diff_vector_similarity"], r["diff_vector_distance"])
    ok = exact <= 1e-6 and original <= 1e-5
    return [
        Row(
            "invariance",
            f"D {dim}, {r['pairs']} pairs, N {n_stats}",
            f"{r['ratio_exact']:.0f}x ({r['loop_s']:.1f} s vs {r['exact_s']:.3f} s)",
            f"float64 ref {exact:.1e} (tol 1e-06); original loop {original:.1e} (tol 1e-05)",
            "ok" if ok else "FAIL",
        )
    ]


#: Every check, in table order; an analysis adds its ``check_<name>`` here.
CHECKS: list[Check] = [
    check_extraction_accuracy,
    check_extraction_throughput,
    check_finetune,
    check_linear,
    check_saliency,
    check_invariance,
]


def _write_images(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` seeded RGB noise-and-gradient PNGs of ``size`` px (not all the same)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    paths = []
    for i in range(count):
        base = ramp[None, :, None] * (i % 3 + 1) / 3 + rng.normal(0, 40, (size, size, 3))
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def context(device: str, smoke: bool, folder: Path, with_sklearn: bool) -> Context:
    """The sizes for a GPU run or for the CPU smoke run."""
    if smoke:
        ctx = Context(device, True, folder, arch="random_r18", image_size=32, batch=2,
                      warmup_batches=1, timed_batches=1, finetune_steps=2)  # fmt: skip
    else:
        ctx = Context(device, False, folder, with_sklearn=with_sklearn)
    # 8 images to compare with the CPU; 64 to fine-tune on (2 batches an epoch on a GPU)
    ctx.images = _write_images(folder, 4 if smoke else 64, max(ctx.image_size + 32, 64))
    return ctx


def run_checks(ctx: Context, checks: list[Check] | None = None) -> list[Row]:
    """Every check's rows; a check that raises gets one FAIL row naming the error."""
    rows = []
    for check in checks or CHECKS:
        try:
            rows.extend(check(ctx))
        except Exception as exc:  # a broken path must not hide the others' results
            name = check.__name__.removeprefix("check_")
            rows.append(Row(name, "-", "-", f"{type(exc).__name__}: {exc}"[:90], "FAIL"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda when present")
    parser.add_argument(
        "--with-sklearn", action="store_true", help="also time scikit-learn on the large problem"
    )
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = "cpu" if smoke else (args.device or "cuda")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_checks(context(device, smoke, Path(tmp), args.with_sklearn))
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    mode = "CPU smoke run (toy sizes; no speed claim)" if smoke else "GPU run"
    print(f"{mode} on {name} ({platform.machine()}), torch {torch.__version__}")
    table = [(r.check, r.setting, r.result, r.accuracy, r.status) for r in rows]
    print(format_table(("check", "setting", "result", "vs CPU fp32", "status"), table))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if all(row.status in ("ok", "skip") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
