"""The few-shot job through its function: the result, the printed lines and the log."""

from __future__ import annotations

import json

from medtransfer.config import Roots
from medtransfer.jobs.fewshot import FewShotOptions, run_few_shot
from medtransfer.jobs.options import DataOptions
from tests.jobs.conftest import MODEL, RUN, SIZE, log_lines

OPTIONS = FewShotOptions(n_way=2, n_support=5, n_query=5, iter_num=30, image_size=SIZE)


def test_one_seed_prints_the_original_line_and_logs_the_rows(
    job_roots: Roots, resolutions: list[str]
) -> None:
    result = run_few_shot(job_roots, DataOptions("shenzhencxr"), MODEL, OPTIONS, RUN)
    assert resolutions == ["shenzhencxr"]  # resolved once for manifest, features and pixels
    assert len(result.lines) == 1 and result.lines[0].startswith("Test Acc = ")
    assert result.extracted is True
    assert result.record == json.loads(result.record_path.read_text())
    assert result.metrics == result.record["metrics"]
    assert set(result.metrics) == {"accuracy", "accuracy_ci95", "accuracy_std", "episodes"}
    assert result.record["params"]["preprocessing"]["resize"] == "square"  # the original's
    log = log_lines(result.record_path)
    assert log[0].startswith("Namespace(") and log[2].startswith("features extracted")
    assert log[3:] == ["episodes drawn from 24 rows", *result.notes, *result.lines]
    assert [note.split(":")[0] for note in result.notes] == ["resize", "pool", "interval", "pixels"]


def test_several_seeds_print_each_and_the_spread(job_roots: Roots) -> None:
    options = FewShotOptions(n_way=2, n_support=3, n_query=3, iter_num=20, image_size=SIZE)
    seeds = FewShotOptions(**{**options.__dict__, "seeds": (3, 4)})
    result = run_few_shot(job_roots, DataOptions("shenzhencxr"), MODEL, seeds, RUN)
    assert result.extracted is False  # the first test's features
    assert [line[:9] for line in result.lines[:2]] == ["[seed 3] ", "[seed 4] "]
    assert result.lines[2].startswith("over 2 episode seeds: ")
    assert result.metrics["accuracy_spread"]["n"] == 2
    assert [entry["seed"] for entry in result.record["per_seed"]] == [3, 4]


def test_the_pool_line_counts_patients_where_they_are_fewer_than_images(
    job_roots: Roots, tmp_path
) -> None:
    """Several images per patient: the pool line names the independent sources behind the
    interval; one image per patient (Shenzhen) says nothing more than the image count."""
    shenzhen = job_roots.data / "shenzhencxr"
    images = sorted(shenzhen.rglob("*.png"))[:24]
    rows = ["path,label,patient"]
    for index, path in enumerate(images):
        label = int(path.stem.endswith("_1"))
        rows.append(f"{path},{label},p{label}-{index % 3}")  # 3 patients a class
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(rows) + "\n")
    result = run_few_shot(job_roots, DataOptions(f"csv:{table}"), MODEL, OPTIONS, RUN)
    pool = next(note for note in result.notes if note.startswith("pool:"))
    assert pool.endswith("24 images from 6 patients")
    assert result.record["pool_patients"] == 6
    alone = run_few_shot(job_roots, DataOptions("shenzhencxr"), MODEL, OPTIONS, RUN)
    assert next(n for n in alone.notes if n.startswith("pool:")).endswith(": 24 images")
