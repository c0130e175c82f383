"""Invert a backbone's feature map with a deep image prior: what do its features keep?

For each image, a fresh DIP "skip" generator (2,606,763 parameters) turns a fixed random
code into an image whose features at --layer (default layer4) match the image's, by Adam
on the generator alone (the original study's feature inversion). The images are drawn from
a split with --image-seed (--images N), or named with --items. Writes, beside the record,
per image: reconstruction.png, target.png (the crop the backbone saw), comparison.png and
the raw output reconstruction.npy; the record holds the loss curves. Several images are
reconstructed together (one generator each, up to --batch-size at once); an interrupted run
resumes from its last checkpoint. --preset original restores the original's input (no
normalisation), its top-left crop, truncation to 8 bits and JPEG output for JPEG sources.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import ConfigError
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import image_size_option, option, str_list
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions

if TYPE_CHECKING:
    import torch

    from medtransfer.analysis.reconstruction import ReconstructionConfig, ReconstructionResult
    from medtransfer.data.manifest import Manifest

SPLITS = ("test", "train", "val", "all")
CROPS = ("centre", "top-left")  # analysis.reconstruction.CROPS, without importing torch
QUANTIZERS = ("round", "truncate")  # analysis.reconstruction.QUANTIZERS
#: Every how many steps the record keeps the loss.
CURVE_EVERY = 10
#: Every how many steps the log says the loss (the original printed every 50).
LOG_EVERY = 50


@dataclass(frozen=True)
class ReconstructOptions:
    """The original's reconstruction flags (docs/original-study.md#reconstruction), corrected.

    The images reconstructed together are :class:`RunOptions`' ``batch_size``.
    """

    layer: str = option(
        "layer4",
        "the intermediate output to invert (layer1..layer4, or any name `models info` lists "
        "for the architecture)",
    )
    steps: int = option(3001, "Adam steps (the paper's runs: max_iter 3000, i.e. 3001)")
    lr: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "seed of the input code and the generators' initialisation")
    images: int = option(1, "images drawn from --split (one generator each)")
    image_seed: int = option(0, "seed of the draw of images")
    split: str = option("test", "the split images are drawn from", choices=SPLITS)
    items: tuple[str, ...] = option(
        (),
        "comma-separated manifest items (paths relative to the dataset folder, as "
        "`datasets export` lists them) to reconstruct instead of a draw",
        parse=str_list,
    )
    image_size: int = image_size_option(224)
    code_size: int = option(256, "side of the input code and the generator's output")
    depth: int = option(6, "generator scales (the original's 6; fewer only for quick trials)")
    crop: str = option(
        "centre", "where the backbone's crop is cut from the generator output", choices=CROPS
    )
    image_format: str = option(
        "png",
        "png (lossless), or source: the original's choice, JPEG for JPEG (and non-image) "
        "sources, PNG and TIFF for those",
        choices=("png", "source"),
    )
    quantize: str = option(
        "round",
        "how [0, 1] output becomes 8-bit pixels after clamping: round, or truncate (the "
        "original's ToPILImage)",
        choices=QUANTIZERS,
    )
    checkpoint_every: int = option(250, "steps between checkpoints", output_only=True)


@dataclass(frozen=True)
class _Image:
    """One image to reconstruct: its manifest row and item, and its output folder name."""

    row: int
    item: str
    label: str
    folder: str


def _choose(manifest: Manifest, options: ReconstructOptions) -> list[_Image]:
    """The images of the run, in order: the named ``items``, or ``images`` rows drawn
    without replacement from ``split`` by a generator seeded with ``image_seed``."""
    import numpy as np

    items = manifest.table["path"].tolist()
    if options.items:
        index = {item: row for row, item in enumerate(items)}
        unknown = [item for item in options.items if item not in index]
        if unknown:
            raise ConfigError(
                f"--items: {', '.join(unknown)} not in the {manifest.dataset} manifest "
                f"(items are paths relative to {manifest.root}, e.g. {items[0]!r}; "
                "`medtransfer datasets export` lists them)."
            )
        rows = [index[item] for item in options.items]
    else:
        pool = manifest.select(options.split)
        if not 1 <= options.images <= len(pool):
            raise ConfigError(
                f"--images {options.images}: the {options.split} split of {manifest.dataset} "
                f"has {len(pool)} images; ask for 1 to {len(pool)}."
            )
        rng = np.random.default_rng(options.image_seed)
        rows = [int(r) for r in rng.choice(pool, size=options.images, replace=False)]
    names = manifest.table["class_name"].tolist()
    chosen = []
    for position, row in enumerate(rows):
        stem = Path(items[row].split("#", 1)[0]).stem + (
            "_" + items[row].split("#", 1)[1] if "#" in items[row] else ""
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        chosen.append(_Image(row, items[row], str(names[row]), f"{position:02d}-{safe}"))
    return chosen


def _config(options: ReconstructOptions, precision: str) -> ReconstructionConfig:
    from medtransfer.analysis.dip import SkipConfig
    from medtransfer.analysis.reconstruction import ReconstructionConfig

    if not 1 <= options.depth <= SkipConfig().depth:
        raise ConfigError(f"--depth takes 1 to {SkipConfig().depth}, got {options.depth}.")
    return ReconstructionConfig(
        steps=options.steps,
        lr=options.lr,
        seed=options.seed,
        image_size=options.image_size,
        code_size=options.code_size,
        crop=options.crop,
        precision=precision,
        checkpoint_every=options.checkpoint_every,
        curve_every=CURVE_EVERY,
        generator=SkipConfig().shallower(options.depth),
    )


def _files(image: _Image, options: ReconstructOptions) -> dict[str, str]:
    """The output files of one image, relative to the record's folder."""
    from medtransfer.analysis.pictures import SUFFIXES, format_of

    image_format = "PNG" if options.image_format == "png" else format_of(image.item)
    suffix = SUFFIXES[image_format]
    if image_format == "JPEG" and image.item.split("#", 1)[0].lower().endswith(".jpeg"):
        suffix = ".jpeg"
    names = {
        "reconstruction": f"reconstruction{suffix}",
        "target": "target.png",
        "comparison": "comparison.png",
        "raw": "reconstruction.npy",
    }
    return {key: f"{image.folder}/{name}" for key, name in names.items()}


def _write_outputs(
    folder: Path,
    images: list[_Image],
    targets: torch.Tensor,
    crops: torch.Tensor,
    options: ReconstructOptions,
) -> None:
    """Write every image's files (see :func:`_files`) into the record's ``folder``."""
    import numpy as np

    from medtransfer.analysis.pictures import format_of, save_rgb, side_by_side
    from medtransfer.analysis.reconstruction import quantize

    target_pixels = quantize(targets, "round")  # exact: the targets are k / 255
    output_pixels = quantize(crops, options.quantize)
    for index, image in enumerate(images):
        files = _files(image, options)
        (folder / image.folder).mkdir(parents=True, exist_ok=True)
        image_format = "PNG" if options.image_format == "png" else format_of(image.item)
        save_rgb(output_pixels[index], folder / files["reconstruction"], image_format)
        save_rgb(target_pixels[index], folder / files["target"])
        pair = side_by_side(
            [target_pixels[index], output_pixels[index]],
            ["target", f"reconstruction ({options.layer})"],
        )
        save_rgb(pair, folder / files["comparison"])
        np.save(folder / files["raw"], crops[index].numpy().astype(np.float32))


def run_reconstruct(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: ReconstructOptions,
    run: RunOptions,
) -> JobResult:
    """Reconstruct the chosen images of ``data`` from ``model``'s ``--layer`` output and
    write one record with every image, its files beside it.

    Images go through in groups of ``run.batch_size`` (one generator per image, trained
    side by side); each group checkpoints under ``<cache>/reconstruction/<key>/`` and
    resumes from there; the checkpoint is removed once the record is written.
    """
    import torch

    from medtransfer.analysis.reconstruction import reconstruct
    from medtransfer.compute import resolve_precision
    from medtransfer.data.prepare import original_pixels
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.fsutil import sha256_json
    from medtransfer.jobs.common import (
        Outcome,
        load_model,
        model_params,
        open_job_data,
        write_job_record,
    )
    from medtransfer.models.intermediate import intermediate_outputs, resolve_layer

    started = time.perf_counter()
    if run.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {run.batch_size}.")
    opened = open_job_data(roots, data, model, "reconstruction")
    manifest = opened.manifest
    chosen = _choose(manifest, options)
    job = load_model(roots, opened, model, run, protocol="reconstruction")
    backbone = job.backbone.requires_grad_(False).to(job.device)
    layer = resolve_layer(backbone.spec.arch, options.layer)
    precision = resolve_precision(run.precision, job.device)
    config = _config(options, precision)

    pixels = original_pixels(manifest)
    preprocessing = Preprocessing(options.image_size, resize="shorter")
    targets = torch.stack([preprocessing(pixels.loader(pixels.paths[i.row])) for i in chosen])

    def features(images: torch.Tensor) -> torch.Tensor:
        return intermediate_outputs(backbone, images, [layer])[layer]

    identity = {
        "weights": backbone.weights_sha256,
        "normalization": backbone.normalization,
        "arch": backbone.spec.arch,
        "layer": layer,
    }
    results: list[ReconstructionResult] = []
    folders: list[Path] = []
    groups = [
        list(range(start, min(start + run.batch_size, len(chosen))))
        for start in range(0, len(chosen), run.batch_size)
    ]
    for group in groups:
        items = [chosen[i].item for i in group]
        key = sha256_json({**identity, "config": config.describe(), "items": items})[:16]
        folder = roots.cache / "reconstruction" / key
        results.append(
            reconstruct(
                features,
                targets[group],
                config,
                device=job.device,
                checkpoint_dir=folder,
                fingerprint=sha256_json(identity),
                progress=run.progress,
            )
        )
        folders.append(folder)
    crops = torch.cat([result.crops for result in results])
    per_image: list[dict[str, Any]] = []
    log_only: list[str] = []
    lines: list[str] = []
    for group_index, (group, result) in enumerate(zip(groups, results, strict=True)):
        for member, index in enumerate(group):
            image = chosen[index]
            curve = result.curve[member]
            per_image.append(
                {
                    "item": image.item,
                    "row": image.row,
                    "class_name": image.label,
                    "files": _files(image, options),
                    "group": group_index,
                    "first_loss": curve[0],
                    "final_loss": result.final_loss[member],
                    "loss_curve": {"steps": result.curve_steps, "loss": curve},
                    "resumed_from": result.resumed_from,
                }
            )
            log_only += [
                f"{image.item}: Iteration: {step}, loss: {loss:f}"
                for step, loss in zip(result.curve_steps, curve, strict=True)
                if (step - 1) % LOG_EVERY == 0 or step == config.steps
            ]
            written = per_image[-1]["files"]["reconstruction"]
            lines.append(
                f"{image.item}: feature MSE {curve[0]:.4g} -> {result.final_loss[member]:.4g} "
                f"after {config.steps} steps ({options.layer}) -> {written}"
            )
    final = [entry["final_loss"] for entry in per_image]
    first = [entry["first_loss"] for entry in per_image]
    metrics = {
        "feature_mse": sum(final) / len(final),
        "feature_mse_first": sum(first) / len(first),
        "images": len(per_image),
    }
    lines.append(
        f"mean feature MSE over {len(final)} image(s): {metrics['feature_mse']:.4g} "
        f"(first step {metrics['feature_mse_first']:.4g})"
    )
    params = {
        **{k: v for k, v in dataclasses.asdict(options).items() if k != "items"},
        "items": list(options.items),
        "layer": options.layer,
        "layer_tapped": layer,
        "metric": "feature_mse",  # the main metric, for results tables
        "batch_size": run.batch_size,
        "reconstruction": config.describe(),
        "generator_parameters": results[0].parameters,
        "target_preprocessing": preprocessing.describe(),
        "clip": True,
        "precision": precision,
        **model_params(backbone, model),
        **manifest.params,
    }
    job.timings["reconstruction_s"] = sum(result.seconds for result in results)
    job.timings["total_s"] = time.perf_counter() - started
    extra = {
        "images": per_image,
        "groups": [[chosen[i].item for i in group] for group in groups],
        "class_names": list(manifest.class_names),
    }
    outcome = Outcome("reconstruction", params, options.seed, metrics, lines, extra, log_only)
    result = write_job_record(
        roots,
        job,
        outcome,
        outputs=lambda folder: _write_outputs(folder, chosen, targets, crops, options),
    )
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return result


JOB = Job(
    "reconstruct",
    run_reconstruct,
    __doc__,
    presets={
        "original": {
            "norm": "none",
            "crop": "top-left",
            "image_format": "source",
            "quantize": "truncate",
            "layer": "layer4",
            "steps": 3001,
            "lr": 1e-3,
            "image_size": 224,
            "code_size": 256,
            "depth": 6,
        }
    },
    # Images optimised together round differently from images optimised alone
    # (docs/analyses/reconstruction.md), so the group size is part of a result's key.
    result_options=("batch_size",),
)
