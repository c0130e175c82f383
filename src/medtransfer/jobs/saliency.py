"""Occlusion saliency and attentive diffusion: where a backbone looks.

Every 10 × 10 window of a 242-px image is occluded (value 0 in the model's normalised
input space) and scored by the relative change of the pooled feature; the scores average
into a 224 × 224 map, and attentive diffusion is the percentage of map pixels above the
map's mean. --images N images are drawn with --seed from the test split (--split), plus --image PATH
of your own; the record holds each image's value and their mean with a bootstrap interval,
and a folder beside it holds per image the map (map.npy), heatmap.png and overlay.png.
Occluded copies go through the model in batches of --batch-size; each image's scores are
checkpointed in the cache, so an interrupted run resumes. BatchNorm uses its running
statistics; --preset original reproduces the original's batch-of-one train-mode statistics
(batched) (docs/original-study.md#saliency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.jobs.base import Headline, Job, JobResult
from medtransfer.jobs.flags import bootstrap_option, option
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.original import EVERY_RUN, ORIGINAL

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from medtransfer.jobs.common import ModelJob

#: Where checkpoints of unfinished score grids are written at most this often (seconds).
CHECKPOINT_SECONDS = 30.0
_VOLUME_SUFFIXES = (".mha", ".mhd")


@dataclass(frozen=True)
class SaliencyOptions:
    """Saliency flags: which images, the occlusion geometry, BatchNorm statistics."""

    images: int = option(10, "images drawn from --split (0: only --image)")
    split: str = option(
        "test", "the split images are drawn from", choices=("test", "train", "val", "all")
    )
    image: Path | None = option(
        None, "an image file of yours to analyse too (.mha/.mhd: the middle slice, HU window)"
    )
    image_size: int = option(
        242,
        "side of the occluded image (shorter side resized, bicubic, then centre-cropped); "
        "the map's side is image_size - 2 * patch + 2",
        flags=("-i", "--image-size"),
    )
    patch: int = option(10, "side of the occluding square in pixels")
    stride: int = option(
        1,
        "step between scored windows; above 1 the scores in between are interpolated (an "
        "approximation of the stride-1 map)",
    )
    batchnorm: str = option(
        "eval",
        "eval: running statistics; per-sample: every pass normalised by its own statistics, "
        "the original's batch-of-one train mode",
        choices=("eval", "per-sample"),
    )
    seed: int = option(0, "seed of the image draw and of the bootstrap")
    bootstrap: int = bootstrap_option()


#: What the original's saliency.py did (docs/original-study.md#saliency): its files, fp32,
#: a 242-px image, a 10-px patch at stride 1, batch-of-one BatchNorm statistics, and the
#: normalisation its runner fed each model.
PRESET: dict[str, Any] = {
    **EVERY_RUN,
    "image_size": 242,
    "patch": 10,
    "stride": 1,
    "batchnorm": "per-sample",
    "norm": ORIGINAL,
}


@dataclass(frozen=True)
class SaliencyImage:
    """One analysed image: ``name`` (manifest item or file), the file it is read from (its
    size and time are part of the cache key), its label (None for a user's file) and the
    decoded RGB picture."""

    name: str
    file: Path
    label: int | None
    picture: Image.Image


def occluder_meaning(normalization: str) -> str:
    """What the occluding value 0 in normalised space looks like for a normalisation kind
    (docs/original-study.md#defect-e27)."""
    if normalization == "none":
        return "black (the model sees [0, 1] pixels)"
    if normalization == "histogram":
        return "the darkest level of the histogram-equalised image (black)"
    return f"the mean colour of the {normalization} normalisation (grey for ImageNet statistics)"


def _draw(job: ModelJob, options: SaliencyOptions) -> tuple[list[SaliencyImage], int]:
    """The images to analyse and the number the test split offered."""
    import numpy as np

    from medtransfer.data.images import load_image
    from medtransfer.data.sources.stoic import load_stoic

    manifest = job.manifest
    test = manifest.select(options.split) if options.images > 0 else np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(options.seed)
    rows = rng.choice(test, size=min(options.images, len(test)), replace=False)
    paths, files, labels = manifest.absolute_paths(), manifest.files(), manifest.labels
    chosen = [
        SaliencyImage(
            str(manifest.table["path"].iat[int(r)]),
            files[int(r)],
            int(labels[int(r)]),
            manifest.loader(paths[int(r)]),
        )
        for r in rows
    ]
    if options.image is not None:
        file = Path(options.image).expanduser().resolve()
        load = load_stoic if file.suffix.lower() in _VOLUME_SUFFIXES else load_image
        chosen.append(SaliencyImage(str(file), file, None, load(file)))
    return chosen, len(test)


def _scores(
    roots: Roots,
    job: ModelJob,
    image: SaliencyImage,
    pixels: Any,
    options: SaliencyOptions,
    precision: str,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """The occlusion scores of one image, from the cache or computed (resumably)."""
    import numpy as np
    import torch

    from medtransfer.analysis.batchnorm import batchnorm_statistics
    from medtransfer.analysis.saliency import occlusion_scores, window_positions
    from medtransfer.compute import autocast
    from medtransfer.data.prepare import file_stats
    from medtransfer.fsutil import atomic_save_array, sha256_json
    from medtransfer.progress import progress as show_progress

    backbone = job.backbone
    key = sha256_json(
        {
            "version": 1,
            "weights_sha256": backbone.weights_sha256,
            "normalization": backbone.normalization,
            "arch": backbone.spec.arch,
            "item": image.name,
            "file": file_stats([image.file])[0],
            "image_size": options.image_size,
            "patch": options.patch,
            "stride": options.stride,
            "batchnorm": options.batchnorm,
            "precision": precision,
        }
    )[:16]
    folder = roots.cache / "saliency" / backbone.spec.name
    final, partial = folder / f"{key}.npy", folder / f"{key}.partial.npy"
    if final.is_file():
        return np.load(final)
    done = np.load(partial) if partial.is_file() else None
    device = job.device
    trunk = backbone.trunk.to(device)
    with torch.inference_mode():
        normalised = backbone.normalize.to(device)(pixels[None].to(device))[0]
    side = len(window_positions(options.image_size, options.patch, options.stride))
    already = 0 if done is None else int(np.count_nonzero(~np.isnan(done)))
    last = {"time": time.monotonic(), "count": already}
    bar = show_progress(
        side * side,
        f"occlusions of {Path(image.name).name}",
        "win",
        enabled=progress,
        initial=already,
    )

    def checkpoint(count: int, total: int, scores: np.ndarray) -> None:
        bar.update(count - last["count"])
        last["count"] = count
        if time.monotonic() - last["time"] >= CHECKPOINT_SECONDS and count < total:
            atomic_save_array(partial, scores)
            last["time"] = time.monotonic()

    def features(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return trunk(batch).float()

    with bar, batchnorm_statistics(trunk, options.batchnorm):
        flat = occlusion_scores(
            features,
            normalised,
            patch=options.patch,
            stride=options.stride,
            batch_size=batch_size,
            done=done,
            progress=checkpoint,
        )
    atomic_save_array(final, flat)
    partial.unlink(missing_ok=True)
    return flat


def _writer(crops: list[Any], maps: list[Any], names: list[str]) -> Any:
    """``outputs(folder)``: per image, ``map.npy``, ``heatmap.png`` and ``overlay.png``."""

    def write(folder: Path) -> None:
        import numpy as np

        from medtransfer.analysis.pictures import jet, overlay, save_rgb

        for crop, saliency, name in zip(crops, maps, names, strict=True):
            target = folder / name
            target.mkdir()
            np.save(target / "map.npy", saliency.astype(np.float32))
            save_rgb(jet(saliency), target / "heatmap.png")
            save_rgb(overlay(crop, saliency), target / "overlay.png")

    return write


def _folder_name(index: int, image: SaliencyImage) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(image.name).stem)
    return f"{index:02d}-{stem}"


def run_saliency(
    roots: Roots,
    data: DataOptions,
    model: ModelOptions,
    options: SaliencyOptions,
    run: RunOptions,
) -> JobResult:
    """Occlusion saliency of each drawn image; one record with every image's attentive
    diffusion, their mean with a bootstrap interval, and the maps and pictures beside it."""
    import numpy as np

    from medtransfer.analysis.saliency import (
        attentive_diffusion,
        check_geometry,
        map_size,
        saliency_map,
    )
    from medtransfer.compute import resolve_precision
    from medtransfer.data.transforms import Preprocessing
    from medtransfer.errors import ConfigError
    from medtransfer.jobs.common import (
        Outcome,
        load_model,
        model_params,
        open_job_data,
        write_job_record,
    )
    from medtransfer.protocols.stats import bootstrap_interval

    check_geometry(options.image_size, options.patch, options.stride)
    if options.images < 0:
        raise ConfigError(f"--images must be 0 or more, got {options.images}.")
    if options.images == 0 and options.image is None:
        raise ConfigError("Nothing to analyse: give --images N (N > 0) or --image PATH.")
    opened = open_job_data(roots, data, model, "saliency")
    job = load_model(roots, opened, model, run, protocol="saliency")
    images, available = _draw(job, options)
    if not images:
        raise ConfigError(
            f"{opened.spec.name}: the {options.split} split has no image; use --split all, "
            "--image PATH or another --split-policy."
        )
    precision = resolve_precision(run.precision, job.device)
    preprocessing = Preprocessing(options.image_size, resize="shorter")
    side, margin = options.image_size, options.patch - 1
    started = time.perf_counter()
    values, maps, crops, per_image, names = [], [], [], [], []
    for index, image in enumerate(images):
        pixels = preprocessing(image.picture)  # (3, S, S) in [0, 1]
        scores = _scores(
            roots, job, image, pixels, options, precision, run.batch_size, run.progress
        )
        saliency = saliency_map(scores, (side, side), patch=options.patch, stride=options.stride)
        value = attentive_diffusion(saliency)
        crop = pixels[:, margin : side - margin, margin : side - margin].permute(1, 2, 0).numpy()
        name = _folder_name(index, image)
        values.append(value)
        maps.append(saliency)
        crops.append(crop)
        names.append(name)
        per_image.append(
            {
                "item": image.name,
                "label": image.label,
                "class_name": None
                if image.label is None
                else job.manifest.class_names[image.label],
                "attentive_diffusion": value,
                "outputs": name,
                "map_mean": float(saliency.mean()),
                "map_max": float(saliency.max()),
            }
        )
    job.timings["saliency_s"] = time.perf_counter() - started
    array = np.asarray(values)
    metrics: dict[str, Any] = {
        "attentive_diffusion": float(array.mean()),
        "attentive_diffusion_std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "images": len(array),
    }
    interval = ""
    if options.bootstrap > 0 and len(array) > 1:
        ci = bootstrap_interval(
            lambda _, s: float(np.mean(s)),
            array,
            array,
            n_resamples=options.bootstrap,
            seed=options.seed,
        )
        metrics["attentive_diffusion_ci"] = [ci.low, ci.high]
        interval = f" (95% CI {ci.low:.2f}-{ci.high:.2f})"
    dataset, model_name = opened.spec.name, job.backbone.spec.name
    lines = [
        f"{entry['item']}: attentive diffusion {entry['attentive_diffusion']:.2f}%"
        for entry in per_image
    ]
    lines.append(
        f"Attentive diffusion on dataset {dataset} with model {model_name}: "
        f"{metrics['attentive_diffusion']:.2f}%{interval} over {len(array)} image(s)"
    )
    params = {
        "metric": "attentive_diffusion",
        "images": options.images,
        "image": str(options.image) if options.image else None,
        "image_split": options.split,
        "image_size": options.image_size,
        "resize": "shorter side, bicubic, then centre crop",
        "patch": options.patch,
        "stride": options.stride,
        "map_size": map_size(options.image_size, options.patch),
        "occluder_value": 0.0,
        "batchnorm": options.batchnorm,
        "batch_size": run.batch_size,
        "bootstrap": options.bootstrap,
        "precision": precision,
        **model_params(job.backbone, model),
        **job.manifest.params,
    }
    extra: dict[str, Any] = {
        "per_image": per_image,
        "images_available": available,
        "occluder": occluder_meaning(job.backbone.normalization),
        "class_names": list(job.manifest.class_names),
    }
    if options.stride > 1:
        extra["stride_note"] = (
            f"stride {options.stride}: scores computed at every {options.stride}th window "
            "position (and the last) and linearly interpolated in between; the map "
            "approximates the stride-1 map"
        )
    if available < options.images:
        lines.insert(0, f"the {options.split} split holds {available} image(s); all are used")
    drawn = f"{len(per_image) - (options.image is not None)} drawn with seed {options.seed} "
    drawn += f"from the {options.split} split" + (f", and {options.image}" if options.image else "")
    policies = {
        "images": drawn,
        "occlusion": f"{options.patch}-px patch at stride {options.stride}, value 0 after the "
        f"model's normalisation: {extra['occluder']}",
        "batchnorm": "running statistics (eval mode)"
        if options.batchnorm == "eval"
        else "each pass normalised by its own statistics (the original's batch-of-one train "
        "mode, docs/original-study.md#defect-e24)",
    }
    headline = Headline(
        "attentive diffusion", metrics["attentive_diffusion"], interval.strip(" ()")
    )
    outcome = Outcome(
        "saliency",
        params,
        options.seed,
        metrics,
        lines,
        extra,
        policies=policies,
        headlines=(headline,),
    )
    return write_job_record(roots, job, outcome, outputs=_writer(crops, maps, names))


JOB = Job("saliency", run_saliency, __doc__, presets={"original": PRESET})
