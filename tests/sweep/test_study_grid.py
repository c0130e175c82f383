"""configs/original-study.yaml: the original study's whole grid validates and lists every cell.

Jobs that are not registered in this tree yet (the analyses) are left out of the check, and
jobs that do not offer ``--preset original`` yet get an empty stand-in preset; both
stand-ins fall away by themselves as the jobs and presets are registered. The counts
below are the study's (docs/original-study.md#experiment-grid).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.jobs.base import Job
from medtransfer.jobs.registry import JOBS
from medtransfer.sweep import grid as grid_module
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.source import GridError

STUDY = Path(__file__).resolve().parents[2] / "configs" / "original-study.yaml"
#: Cells per protocol: the runner's lines with the typos corrected, plus the runs only
#: slurm_submits/ hold (invariance: 18 multi-view + 76 runner + 25 slurm-only).
EXPECTED = {
    "few-shot": 140,
    "finetune": 26,
    "linear": 26,
    "invariance": 119,
    "reconstruct": 130,
    "saliency": 85,
    "perceptual-distance": 1,
}


def jobs_with_presets() -> list[Job]:
    return [
        job if "original" in job.presets else dataclasses.replace(job, presets={"original": {}})
        for job in JOBS
    ]


@pytest.fixture
def registered_part(tmp_path: Path) -> Path:
    """The study grid less the blocks of protocols this tree does not register."""
    data = yaml.safe_load(STUDY.read_text())
    assert {block["protocol"] for block in data["grid"]} == set(EXPECTED)
    names = {job.name for job in JOBS}
    data["grid"] = [block for block in data["grid"] if block["protocol"] in names]
    path = tmp_path / "original-study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_study_grid_has_every_cell_of_the_original(registered_part: Path) -> None:
    grid = load_grid(registered_part, jobs_with_presets())
    counts = Counter(cell.protocol for cell in grid.cells)
    assert counts == {p: n for p, n in EXPECTED.items() if p in {job.name for job in JOBS}}
    assert grid.merged == 0 and all(cell.preset == "original" for cell in grid.cells)
    few = [cell for cell in grid.cells if cell.protocol == "few-shot"]
    assert (
        len({cell.raw["model"] for cell in few}) == 14
        and len({c.raw["dataset"] for c in few}) == 10
    )
    five_way = {c.raw["dataset"] for c in few if c.raw["n_way"] == 5}
    assert five_way == {"chestx", "diabetic_retinopathy", "cifar10"}
    assert {c.raw["model"] for c in few if c.raw.get("no_norm")} == {"simclr-v1"}
    auc = [c for c in grid.cells if c.raw.get("metric") == "auc"]
    assert len(auc) == 5 and {c.raw["lr"] for c in auc} == {3e-5}
    linear = [c for c in grid.cells if c.protocol == "linear"]
    assert all(c.raw["no_norm"] for c in linear)
    # the three large datasets have their feature extraction split, in every cell that reads it
    large = {"chexpert": 8, "chestx": 4, "diabetic_retinopathy": 4}
    for cell in grid.cells:
        parts = (
            large.get(cell.raw.get("dataset", ""))
            if cell.protocol in ("few-shot", "linear")
            else None
        )
        assert (cell.split or {}).get("parts") == parts, cell.label
        assert cell.split is None or cell.split["min_images"] == 20000


def test_the_typos_of_the_runner_are_corrected() -> None:
    values = json.dumps(yaml.safe_load(STUDY.read_text()))  # not the comments
    typos = ("icahllenge", "diabeteic", "shenzhencxe", "mimc-", "mimic_chexpert", '"k": null')
    for typo in typos:
        assert typo not in values


def test_protocols_not_registered_yet_are_a_clear_error() -> None:
    missing = sorted(set(EXPECTED) - {job.name for job in JOBS})
    if not missing:
        load_grid(STUDY, jobs_with_presets())  # every protocol registered: all validates
        return
    with pytest.raises(GridError) as caught:
        load_grid(STUDY, jobs_with_presets())
    text = str(caught.value)
    for name in missing:
        assert f"protocol {name!r} is not a registered job of this medtransfer" in text


def test_dry_run_lists_every_cell(
    registered_part: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(grid_module, "JOBS", tuple(jobs_with_presets()))
    assert main(["sweep", str(registered_part), "--dry-run"]) == 0
    out = capsys.readouterr().out
    grid = load_grid(registered_part, jobs_with_presets())
    for cell in grid.cells:
        assert f"{cell.short}  pending" in out
    assert f"valid; {len(grid.cells)} cells ({len(grid.cells)} pending)" in out
