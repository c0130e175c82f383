"""Score how alike image pairs look: LPIPS (AlexNet, VGG, SqueezeNet), SSIM and MS-SSIM.

Pairs come from --pairs FILE.csv (columns reference,reconstruction and, optionally, model
and dataset; paths relative to the CSV's folder) or, with --from-reconstructions, from every
reconstruction record under the results folder (each image's reconstruction against the
target the backbone saw). Both images are resized (shorter side, bicubic) and centre-cropped
to --image-size, as the original did. Writes one record per (model, dataset) group, with a
row per image, and the original's tables: one CSV per metric (alexnet, vgg, squeezenet,
average of the three LPIPS nets, ssim, ms_ssim), a row per model and a column per dataset.
The LPIPS trunks' torchvision weights are downloaded once into the cache; SSIM needs none
(--nets none works offline).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import ConfigError, DatasetError
from medtransfer.jobs.base import Job, JobResult
from medtransfer.jobs.flags import image_size_option, option
from medtransfer.jobs.options import RunOptions

if TYPE_CHECKING:
    import torch

LPIPS_NETS = ("alex", "vgg", "squeeze")  # analysis.perceptual.LPIPS_NETS, without torch
#: Metric key in records -> the CSV table's file name (the original's for the LPIPS nets).
TABLES = {
    "lpips_alex": "alexnet",
    "lpips_vgg": "vgg",
    "lpips_squeeze": "squeezenet",
    "lpips_average": "average",
    "ssim": "ssim",
    "ms_ssim": "ms_ssim",
}
UNSPECIFIED = "unspecified"


def net_list(text: str, flag: str) -> tuple[str, ...]:
    """``"alex,vgg"`` -> ``("alex", "vgg")``; ``"none"`` -> ``()``."""
    nets = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if nets == ("none",):
        return ()
    unknown = [net for net in nets if net not in LPIPS_NETS]
    if unknown or not nets:
        raise ConfigError(
            f"{flag} takes a comma-separated list of {', '.join(LPIPS_NETS)}, or none; "
            f"got {text!r}."
        )
    return tuple(dict.fromkeys(nets))


@dataclass(frozen=True)
class PerceptualOptions:
    """Where the pairs come from and what to score (docs/analyses/perceptual-distance.md)."""

    pairs: Path | None = option(
        None,
        "a CSV with columns reference,reconstruction (optional: model, dataset); relative "
        "paths are relative to the CSV's folder",
    )
    from_reconstructions: bool = option(
        False, "score every reconstruction record under the results folder against its target"
    )
    nets: tuple[str, ...] = option(
        LPIPS_NETS, "LPIPS trunks: comma-separated alex, vgg, squeeze, or none", parse=net_list
    )
    ssim: bool = option(True, "leave out SSIM and MS-SSIM", flags=("--no-ssim",))
    image_size: int = image_size_option(224)
    tables: Path | None = option(
        None, "folder of the CSV tables (default: <results>/perceptual-distance)", output_only=True
    )


@dataclass
class _Pair:
    reference: Path
    reconstruction: Path
    name: str  # what the row is called in the record (the item, or the CSV row)


@dataclass
class _Group:
    """Pairs scored into one record: one model on one dataset."""

    model: str
    dataset: str
    pairs: list[_Pair] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    manifest_hash: str = ""
    created: str = ""


def _read_pairs(path: Path) -> list[_Group]:
    """The groups of a pairs CSV, by (model, dataset) in order of first appearance."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"--pairs {path}: no such file.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = [c for c in ("reference", "reconstruction") if c not in columns]
        if missing:
            raise ConfigError(
                f"--pairs {path} has no column(s) {', '.join(missing)}; its header is "
                f"{','.join(columns) or '(empty)'}. Expected reference,reconstruction "
                "(and optionally model,dataset)."
            )
        groups: dict[tuple[str, str], _Group] = {}
        for number, row in enumerate(reader, start=2):
            files = {}
            for column in ("reference", "reconstruction"):
                text = (row.get(column) or "").strip()
                file = (path.parent / text).resolve() if text else None
                if file is None or not file.is_file():
                    raise DatasetError(
                        f"--pairs {path}, line {number}: the {column} file "
                        f"{file or '(empty)'} does not exist."
                    )
                files[column] = file
            model = (row.get("model") or "").strip() or UNSPECIFIED
            dataset = (row.get("dataset") or "").strip() or path.stem
            group = groups.setdefault((model, dataset), _Group(model, dataset))
            group.source = {"pairs_csv": str(path)}
            group.pairs.append(_Pair(files["reference"], files["reconstruction"], f"line {number}"))
    if not groups:
        raise ConfigError(f"--pairs {path} has a header but no rows.")
    return list(groups.values())


def _reconstruction_records(results: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every reconstruction record under ``results``, oldest first."""
    found = []
    for path in sorted((results / "reconstruction").glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("protocol") == "reconstruction" and "images" in record:
            found.append((record.get("created", ""), path, record))
    for _, path, record in sorted(found, key=lambda entry: entry[:2]):
        yield path, record


def _from_reconstructions(results: Path) -> tuple[list[_Group], list[str]]:
    """One group per reconstruction record; and lines naming records left out."""
    from medtransfer.results.records import outputs_folder

    groups, skipped = [], []
    for path, record in _reconstruction_records(results):
        folder = outputs_folder(path)
        pairs = []
        for image in record["images"]:
            files = image.get("files", {})
            reference = folder / files.get("target", "?")
            reconstruction = folder / files.get("reconstruction", "?")
            if not (reference.is_file() and reconstruction.is_file()):
                pairs = []
                skipped.append(f"skipped {path}: its files under {folder} are missing")
                break
            pairs.append(_Pair(reference, reconstruction, image.get("item", "?")))
        if pairs:
            source = {
                "reconstruction_record": str(path),
                "reconstruction_config_hash": record.get("config_hash"),
                "layer": record.get("params", {}).get("layer"),
            }
            groups.append(
                _Group(
                    record["model"],
                    record["dataset"],
                    pairs,
                    source,
                    record.get("weights_sha256", ""),
                    record.get("manifest_hash", ""),
                    record.get("created", ""),
                )
            )
    if not groups:
        raise ConfigError(
            f"--from-reconstructions: no reconstruction record with its images under "
            f"{results / 'reconstruction'}. Run `medtransfer reconstruct` first."
        )
    return groups, skipped


def _load(paths: list[Path], size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` in [0, 1]: decoded, shorter side resized (bicubic), centre crop."""
    import torch

    from medtransfer.data.images import load_image
    from medtransfer.data.transforms import Preprocessing

    preprocessing = Preprocessing(size, resize="shorter")
    return torch.stack([preprocessing(load_image(path)) for path in paths])


def _score(
    groups: list[_Group],
    options: PerceptualOptions,
    models: dict[str, Any],
    run: RunOptions,
    device: str,
    precision: str,
) -> list[dict[str, float | None]]:
    """One row of scores per pair, in group order; batches of ``run.batch_size`` pairs."""
    from medtransfer.analysis import perceptual
    from medtransfer.compute import autocast

    pairs = [pair for group in groups for pair in group.pairs]
    rows: list[dict[str, float | None]] = []
    step = max(1, run.batch_size)
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        images = _load([p.reference for p in chunk], options.image_size).to(device)
        others = _load([p.reconstruction for p in chunk], options.image_size).to(device)
        scores: dict[str, list[float] | None] = {}
        with autocast(device, precision):
            for net, lpips_model in models.items():
                scores[f"lpips_{net}"] = perceptual.lpips_distance(
                    lpips_model, images, others
                ).tolist()
        if options.ssim:
            scores["ssim"] = perceptual.ssim(images, others).tolist()
            multi = perceptual.ms_ssim(images, others)
            scores["ms_ssim"] = multi.tolist() if multi is not None else None
        for index in range(len(chunk)):
            row = {k: (v[index] if v is not None else None) for k, v in scores.items()}
            lpips_values = [row[f"lpips_{net}"] for net in models]
            if lpips_values:
                row["lpips_average"] = sum(lpips_values) / len(lpips_values)  # type: ignore[arg-type]
            rows.append(row)
    return rows


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if len(present) == len(values) and present else None


def _write_tables(folder: Path, cells: dict[str, dict[tuple[str, str], float]]) -> list[Path]:
    """One CSV per metric: header ``model,<dataset>...``, a row per model (first-seen
    order); an empty cell where a model has no value for a dataset."""
    from medtransfer.fsutil import atomic_write_text

    written = []
    for metric, values in cells.items():
        if not values:
            continue
        models = list(dict.fromkeys(model for model, _ in values))
        datasets = list(dict.fromkeys(dataset for _, dataset in values))
        lines = [",".join(["model", *datasets])]
        for model in models:
            cells_of = [values.get((model, d)) for d in datasets]
            lines.append(",".join([model, *("" if v is None else repr(v) for v in cells_of)]))
        path = folder / f"{TABLES[metric]}.csv"
        atomic_write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def _format(metrics: dict[str, Any]) -> str:
    parts = []
    lpips = [
        f"{k.removeprefix('lpips_')} {v:.4f}"
        for k, v in metrics.items()
        if k.startswith("lpips_") and v is not None
    ]
    if lpips:
        parts.append("LPIPS " + ", ".join(lpips))
    for key, label in (("ssim", "SSIM"), ("ms_ssim", "MS-SSIM")):
        if key in metrics:
            value = metrics[key]
            parts.append(f"{label} {value:.4f}" if value is not None else f"{label} n/a")
    return "; ".join(parts)


def _params(
    options: PerceptualOptions, trunks: dict[str, tuple[Path, str]], precision: str
) -> dict[str, Any]:
    """The record parameters every group of a run shares."""
    from medtransfer.analysis.perceptual import LPIPS_VERSION, MS_SSIM_MIN_SIDE
    from medtransfer.models.lpips_trunks import LPIPS_TRUNKS

    ssim = {
        "package": "pytorch-msssim",
        "window": 11,
        "sigma": 1.5,
        "data_range": 1.0,
        "ms_ssim_min_side": MS_SSIM_MIN_SIDE,
    }
    files = {
        net: {"file": LPIPS_TRUNKS[net].filename, "sha256": sha} for net, (_, sha) in trunks.items()
    }
    return {
        # the main metric, for results tables: the study's average LPIPS (SSIM without nets)
        "metric": "lpips_average" if options.nets else "ssim",
        "source": "pairs" if options.pairs is not None else "reconstructions",
        "nets": list(options.nets),
        "lpips": {"version": LPIPS_VERSION, "trunks": files, "inputs": "[-1, 1] (2x - 1)"},
        "ssim": ssim if options.ssim else None,
        "image_size": options.image_size,
        "preprocessing": "shorter side to image_size (bicubic), centre crop",
        "precision": precision,
    }


def run_perceptual_distance(roots: Roots, options: PerceptualOptions, run: RunOptions) -> JobResult:
    """Score every pair; write one record per group and the CSV tables.

    The LPIPS networks are built once per run. Precision: ``auto`` is fp32 here on every
    device (a distance compared with published values); bf16/fp16 when asked for.
    Returns the result of the last record written; its lines cover every record.
    """
    from medtransfer.analysis.perceptual import build_lpips
    from medtransfer.compute import resolve_device, resolve_precision
    from medtransfer.jobs.common import Outcome, write_outcome
    from medtransfer.models.lpips_trunks import fetch_trunks, read_trunk

    started = time.perf_counter()
    if (options.pairs is None) == (not options.from_reconstructions):
        raise ConfigError("Give exactly one of --pairs FILE.csv and --from-reconstructions.")
    if not options.nets and not options.ssim:
        raise ConfigError("Nothing to score: --nets none together with --no-ssim.")
    skipped: list[str] = []
    if options.pairs is not None:
        groups = _read_pairs(options.pairs)
    else:
        groups, skipped = _from_reconstructions(roots.results)
    device = resolve_device(run.device)
    precision = "fp32" if run.precision == "auto" else resolve_precision(run.precision, device)
    trunks = fetch_trunks(options.nets, roots, progress=run.progress)
    models = {
        net: build_lpips(net, read_trunk(path), what=str(path)).to(device)
        for net, (path, _) in trunks.items()
    }
    scored = time.perf_counter()
    rows = _score(groups, options, models, run, device, precision)
    seconds = time.perf_counter() - scored
    params_common = _params(options, trunks, precision)
    cells: dict[str, dict[tuple[str, str], float]] = {metric: {} for metric in TABLES}
    lines: list[str] = []
    results: list[JobResult] = []
    position, superseded = 0, 0
    for group in groups:
        group_rows = rows[position : position + len(group.pairs)]
        position += len(group.pairs)
        names = list(group_rows[0]) if group_rows else []
        metrics: dict[str, Any] = {name: _mean([r[name] for r in group_rows]) for name in names}
        metrics["images"] = len(group_rows)
        per_image = [
            {
                "name": p.name,
                "reference": str(p.reference),
                "reconstruction": str(p.reconstruction),
                **r,
            }
            for p, r in zip(group.pairs, group_rows, strict=True)
        ]
        params = {**params_common, **group.source}
        text = f"{group.model} on {group.dataset} ({len(group_rows)} image(s)): {_format(metrics)}"
        timings = {"scoring_s": seconds * len(group_rows) / max(1, len(rows))}
        outcome = Outcome("perceptual-distance", params, 0, metrics, [text], {"images": per_image})
        result = write_outcome(
            roots,
            outcome,
            model=group.model,
            dataset=group.dataset,
            weights_sha256=group.weights_sha256,
            manifest_hash=group.manifest_hash,
            timings=timings,
            device=device,
            preset=(run.preset, dict(run.preset_settings)),
        )
        results.append(result)
        lines.append(f"{text} -> {result.record_path}")
        cell = (group.model, group.dataset)
        superseded += any(cell in values for values in cells.values())
        for metric in TABLES:
            if metrics.get(metric) is not None:
                cells[metric][cell] = metrics[metric]  # groups come oldest first: newest wins
    folder = options.tables or roots.results / "perceptual-distance"
    tables = _write_tables(Path(folder), cells)
    lines += skipped
    if superseded:
        lines.append(
            f"{superseded} record(s) left out of the tables: a newer one of the same model "
            "and dataset fills that cell (every record keeps its own scores)"
        )
    if tables:
        lines.append(
            f"tables ({time.perf_counter() - started:.1f} s): " + ", ".join(str(t) for t in tables)
        )
    last = results[-1]
    return JobResult(last.record_path, last.record, last.metrics, lines)


JOB = Job(
    "perceptual-distance",
    run_perceptual_distance,
    __doc__,
    presets={"original": {"nets": LPIPS_NETS, "ssim": False, "image_size": 224}},
)
