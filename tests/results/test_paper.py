"""The paper's table: published values as shipped, their transcription from the docs, the
model-name mapping, and our cells beside the published ones."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
from pathlib import Path

import pytest

from medtransfer.results.collect import read_records
from medtransfer.results.paper import (
    column_spec,
    paper_cells,
    paper_row,
    paper_wide,
    published_long,
    published_models,
    published_table,
    value_columns,
)
from medtransfer.results.table import long_table
from tests.results.conftest import Sweep, hand_record

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "original-study.md").read_text(encoding="utf-8")


def _doc_cell(model: str, header: str, table_caption: str) -> str:
    """The text of a cell of a table in docs/original-study.md, found by its caption."""
    section = DOC[DOC.index(table_caption) :]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == model:
            return cells[headers.index(header)]
    raise AssertionError(f"{model} not in the table after {table_caption!r}")


def test_published_table_has_the_originals_shape_and_names() -> None:
    table = published_table()
    assert table.shape == (13, 91) and table.index.name == "Models"
    assert list(table.index[:2]) == ["simclrv1", "mocov2"]
    assert table.columns[0] == "few shot shenzhencxr"
    assert table.columns[14] == "few shot diabetic retinopathy (5way)"
    assert table.columns[22] == "imagenet top1" and table.columns[-2:].tolist() == [
        "Model Type",
        "Marker Size",
    ]
    assert len(value_columns()) == 89
    assert table.at["mimic-cxr d121", "Model Type"] == "Medical SSL"


@pytest.mark.parametrize(
    ("model", "column", "expected"),
    [
        # the readme's reference values (docs/original-study.md#published-results)
        ("mocov2", "few shot shenzhencxr", 0.7376),
        ("mocov2", "few shot shenzhencxr uncertainty", 0.0066),
        ("mimic-chexpert lr=0.01", "few shot chestx (5way)", 0.3373),
        ("mimic-chexpert lr=0.01", "few shot chestx (5way) uncertainty", 0.0045),
        ("mocov2", "finetune chexpert", 0.7996),
        ("pirl", "linear diabetic retinopathy", 0.3151),
        ("mocov2", "attentive diffusion chexpert", 0.4864),
        # one cell of every other table
        ("mimic-cxr d121", "few shot cifar10 (5way)", 0.5234),
        ("supervised d121", "imagenet top1", 0.7498),
        ("mimic-cxr d121", "invariance hflip chestx", 0.7784),
        ("mimic-chexpert lr=0.01", "invariance rotation shenzhencxr", -0.000174),
        ("simclrv1", "perceptual distance average shenzhencxr", 0.901266078),
        ("mimic-cxr d121", "perceptual distance squeezenet imagenet", None),
    ],
)
def test_published_cells(model: str, column: str, expected: float | None) -> None:
    value = published_table().at[model, column]
    if expected is None:  # looked up in the doc instead
        caption = "LPIPS with SqueezeNet"
        expected = float(_doc_cell(model, "imagenet", caption))
    assert value == expected


def test_empty_cells_are_nan() -> None:
    table = published_table()
    assert math.isnan(table.at["swav", "invariance rotation shenzhencxr"])
    assert math.isnan(table.at["mimic-cxr r18", "imagenet top1"])


def test_package_data_is_the_transcription_of_the_docs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "transcribe", REPO / "scripts" / "transcribe_published.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    full, models = module.transcribe(DOC)
    data = REPO / "src" / "medtransfer" / "results" / "data"
    assert full == (data / "full_data.csv").read_text(encoding="utf-8")
    assert models == (data / "models.csv").read_text(encoding="utf-8")
    # a changed number in the docs is a changed transcription
    changed, _ = module.transcribe(DOC.replace("0.7376 ± 0.0066", "0.7377 ± 0.0066"))
    assert changed != full


def test_model_mapping_resolves_every_published_model_to_the_catalog() -> None:
    mapping = {m.full_data: m.catalog for m in published_models()}
    assert len(mapping) == 13
    assert mapping["mimic-cxr r18"] == "moco-cxr_r18"
    assert mapping["simclrv1"] == "simclr-v1" and mapping["supervised r50"] == "supervised_r50"
    record = {"model": "moco-cxr_d121", "params": {"weights": None}}
    assert paper_row(record) == "mimic-cxr d121"
    assert paper_row({"model": "moco-v2", "params": {"weights": "/x.pth"}}) == "moco-v2"
    assert paper_row({"model": "moco-v2", "params": {"label": "moco@mine"}}) == "moco@mine"
    assert paper_row({"model": "random_r18", "params": {}}) == "random_r18"


def test_column_specs() -> None:
    spec = column_spec("few shot chestx (5way) uncertainty")
    assert (spec.protocol, spec.dataset, spec.params, spec.part) == (
        "few-shot",
        "chestx",
        (("n_way", 5),),
        "half",
    )
    assert column_spec("few shot bach").params == (("n_way", 2),)
    assert column_spec("linear diabetic retinopathy").dataset == "diabetic_retinopathy"
    assert column_spec("invariance hflip chexpert").params == (("transform", "h_flip"),)
    assert column_spec("perceptual distance squeezenet stoic").metric_hint == "squeeze"
    assert column_spec("imagenet top1").protocol is None


def test_our_cells_beside_the_published(tmp_path: Path) -> None:
    hand_record(
        tmp_path,
        protocol="few-shot",
        model="moco-v2",
        params={"n_way": 2, "n_support": 5, "n_query": 15, "iter_num": 600},
        metrics={"accuracy": 75.0, "accuracy_ci95": 0.5},
    )
    hand_record(  # 5-way: fills no 2-way column
        tmp_path,
        protocol="few-shot",
        model="moco-v2",
        params={"n_way": 5},
        metrics={"accuracy": 40.0, "accuracy_ci95": 0.5},
    )
    hand_record(
        tmp_path,
        protocol="few-shot",
        model="moco-cxr_r18",
        dataset="chestx",
        params={"n_way": 5, "n_support": 20, "n_query": 15, "iter_num": 600, "preset": "original"},
        metrics={"accuracy": 27.0, "accuracy_ci95": 0.4},
    )
    hand_record(
        tmp_path,
        protocol="saliency",
        model="swav",
        dataset="chexpert",
        metrics={"attentive_diffusion": 50.0, "attentive_diffusion_ci": [45.0, 55.0]},
    )
    hand_record(
        tmp_path,
        protocol="invariance",
        model="pirl",
        dataset="chexpert",
        params={"transform": "h_flip"},
        metrics={"similarity": 0.7},
    )
    hand_record(
        tmp_path,
        protocol="perceptual-distance",
        model="byol",
        dataset="stoic",
        metrics={"lpips_alex": 0.5, "lpips_average": 0.55},
    )
    records, _ = read_records(tmp_path)
    cells = paper_cells(long_table(records), {str(r.path): r.data for r in records})
    got = {(row.Models, row.column): row for row in cells.itertuples()}
    cell = got[("mocov2", "few shot shenzhencxr")]
    assert (cell.ours, cell.published) == (0.75, 0.7376)
    assert cell.difference == pytest.approx(0.75 - 0.7376)
    assert (cell.ours_low, cell.ours_high) == pytest.approx((0.745, 0.755))
    assert "n_support=5 (published 20)" in cell.notes and "corrected defaults" in cell.notes
    assert got[("mocov2", "few shot shenzhencxr uncertainty")].ours == pytest.approx(0.005)
    chestx = got[("mimic-cxr r18", "few shot chestx (5way)")]
    assert chestx.published == 0.2615 and chestx.notes == "patient split"
    assert got[("swav", "attentive diffusion chexpert")].ours == 0.5
    assert got[("swav", "attentive diffusion chexpert")].published == 0.518
    assert got[("pirl", "invariance hflip chexpert")].published == 0.716168
    assert got[("byol", "perceptual distance alexnet stoic")].ours == 0.5
    assert got[("byol", "perceptual distance average stoic")].published == 0.505183677
    assert ("mocov2", "few shot shenzhencxr (5way)") not in got
    assert len(cells) == 8  # 2 few-shot cells x (value, uncertainty), AD, invariance, 2 LPIPS

    wide = paper_wide(cells)
    assert wide.shape == (13, 89 * 3 + 1)
    assert wide.at["mocov2", "few shot shenzhencxr (difference)"] == pytest.approx(0.0124)
    assert math.isnan(wide.at["swav", "few shot shenzhencxr"])
    assert wide.at["swav", "few shot shenzhencxr (published)"] == 0.7522


def test_published_long_feeds_the_figures() -> None:
    table = published_long()
    few = table[(table["protocol"] == "few-shot") & (table["dataset"] == "shenzhencxr")]
    byol = few[few["label"] == "byol"].iloc[0]
    assert byol["value"] == pytest.approx(76.29) and byol["high"] == pytest.approx(76.94)
    assert set(table["protocol"]) == {
        "few-shot",
        "linear",
        "finetune",
        "saliency",
        "invariance",
        "perceptual-distance",
    }


def test_results_paper_on_the_sweep_shows_cells_beside_the_published(
    sweep: Sweep, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    shutil.copytree(sweep.roots.results, results)
    hand_record(
        results,
        protocol="few-shot",
        model="moco-v2",
        params={"n_way": 2, "n_support": 20, "n_query": 15, "iter_num": 600},
        metrics={"accuracy": 74.0, "accuracy_ci95": 0.7},
    )
    flags = ["--results-dir", str(results)]
    status, text = sweep.cli(*flags, "results", "--paper")
    assert status == 0
    assert re.search(r"\| mocov2 \| few shot shenzhencxr \| 0\.7400 \| 0\.7376 \| 0\.0024 \|", text)
    for model in ("random_r18", "random_r50", "efficientnet-lite0"):  # our other runs: own rows
        assert f"| {model} | few shot shenzhencxr |" in text
    status, text = sweep.cli(*flags, "results", "--paper", "--wide", "--format", "csv")
    header = text.splitlines()[0].split(",")
    assert header[:4] == [
        "Models",
        "few shot shenzhencxr",
        "few shot shenzhencxr (published)",
        "few shot shenzhencxr (difference)",
    ]
    assert len(header) == 1 + 89 * 3 + 1 and len(text.splitlines()) == 1 + 13 + 3
