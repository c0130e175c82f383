"""``split_extraction`` without running anything: the grid setting, its validation, the
part tasks' state (done with no record), the schedule, and the Slurm submission (through
submitit, to a stand-in ``sbatch``): part arrays first, the arrays of units that wait for
parts with ``--dependency=afterany`` on them."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from medtransfer.config import resolve_roots
from medtransfer.sweep import slurm
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.grid import load_grid
from medtransfer.sweep.order import make_units
from medtransfer.sweep.parts import PartTask
from medtransfer.sweep.runner import RunContext, adopt_records, wants_run
from medtransfer.sweep.split import SplitPlan, schedule
from medtransfer.sweep.state import DONE, cell_files, cell_status, reconcile, write_state
from tests.sweep.test_grid import grid_file, problems

BAD = """\
split_extraction: {min_images: many, parts: 1}
grid:
  - protocol: knn
    models: random_r18
    datasets: bach
    split_extraction: {min_images: 100, part: 4}
  - protocol: finetune
    models: random_r18
    datasets: bach
    split_extraction: {min_images: 100, parts: 4}
  - protocol: few-shot
    models: random_r18
    datasets: bach
    split_extraction: 8
    when:
      - match: {dataset: bach}
        split_extraction: {min_images: 0, parts: 2, slurm: {gpu: 1}}
"""


def test_bad_split_extraction_entries_are_listed_with_their_place(tmp_path: Path) -> None:
    assert problems(grid_file(tmp_path, BAD)) == [
        "1:20: min_images takes a whole number >= 1, got 'many'",
        "1:38: parts takes a whole number >= 2, got 1 (1 part is no split: write "
        "`split_extraction: false`)",
        "6:41: unknown key 'part' (did you mean 'parts'?); keys here: min_images, parts, slurm",
        "6:5: split_extraction needs parts (how many tasks share one extraction)",
        "10:5: finetune reads no stored features (only linear, knn, few-shot do): "
        "split_extraction has nothing to split here; leave it out",
        "14:5: split_extraction: {min_images: N, parts: K} (split the feature extraction of a "
        "dataset of N images or more into K tasks), or false",
        "17:28: min_images takes a whole number >= 1, got 0",
        "17:61: unknown Slurm resource 'gpu'; resources: "
        "partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min, array_parallelism, "
        "account, qos, constraint, setup",
    ]


def test_the_setting_comes_from_the_top_the_block_or_a_when_entry(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        split_extraction: {min_images: 1000, parts: 4}
        grid:
          - protocol: knn
            models: random_r18
            datasets: [bach, chexpert, chestx]
            when:
              - match: {dataset: chexpert}
                split_extraction: {min_images: 50000, parts: 8, slurm: {timeout_min: 30}}
              - match: {dataset: chestx}
                split_extraction: false
          - protocol: few-shot
            models: random_r18
            datasets: bach
            split_extraction: false
          - protocol: finetune
            models: random_r18
            datasets: bach
        """,
    )
    split = {(c.protocol, c.raw["dataset"]): c.split for c in load_grid(path).cells}
    assert split == {
        ("knn", "bach"): {"min_images": 1000, "parts": 4, "slurm": {}},
        ("knn", "chexpert"): {"min_images": 50000, "parts": 8, "slurm": {"timeout_min": 30}},
        ("knn", "chestx"): None,
        ("few-shot", "bach"): None,
        ("finetune", "bach"): None,  # reads images: the top-level setting does not apply
    }
    # the setting changes where the work runs, not the result: no cell key depends on it
    without = grid_file(tmp_path, "grid: [{protocol: knn, models: random_r18, datasets: bach}]")
    (alone,) = load_grid(without).cells
    assert alone.key == next(c.key for c in load_grid(path).cells if c.protocol == "knn")


def _context(tmp_path: Path, **changes: object) -> RunContext:
    roots = resolve_roots(tmp_path / "data", tmp_path / "cache", tmp_path / "results")
    return replace(RunContext(roots, "now", "g", "g.yaml", "slurm"), **changes)


def _parts(cell: Cell, count: int, resources: dict[str, object]) -> tuple[PartTask, ...]:
    return tuple(
        PartTask(f"{index:x}" * 64, index, count, cell, 100, resources, f"part {index}/{count}")
        for index in range(1, count + 1)
    )


def test_a_part_is_done_by_its_state_without_a_record(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    results = ctx.roots.results
    (cell,) = load_grid(
        grid_file(tmp_path, "grid: [{protocol: knn, models: random_r18, datasets: bach}]")
    ).cells
    (part,) = _parts(cell, 1, {})
    files = cell_files(results, part.key)
    write_state(files, {"state": DONE, "run": "before", "record": None, "store": "/s/abc"})
    status = cell_status(results, part.key)
    assert status.status == DONE and status.record is None
    assert not wants_run(ctx, status.state, results)
    assert wants_run(replace(ctx, force=True), status.state, results)
    assert adopt_records(results, [cell]) == 0  # no record, nothing to adopt
    # an attempt killed mid-way is interrupted; no record is looked for
    write_state(files, {"state": "running", "attempt": "a", "attempts": 1, "record": None})
    assert reconcile(results, part.key, records=False)["state"] == "interrupted"


def test_parts_run_first_in_the_stage_of_the_first_unit_that_needs_them(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        grid:
          - protocol: knn
            models: random_r18
            datasets: [bach, chexpert]
          - protocol: few-shot
            models: random_r18
            datasets: chexpert
            options: {resize: shorter}
            stage: 1
        """,
    )
    cells = load_grid(path).cells
    knn_chexpert = cells[1]
    parts = _parts(knn_chexpert, 2, {"gpus_per_node": 1})
    plan = SplitPlan({knn_chexpert.key: parts, cells[2].key: parts})
    units = schedule(make_units(cells), plan, lambda part: part.index != 2)
    assert [(u.stage, len(u.cells), [p.index for p in u.parts]) for u in units] == [
        (0, 0, [1]),  # part 2 is done (to_run refused it): no unit of its own
        (0, 1, []),
        (0, 1, [1, 2]),
        (1, 1, [1, 2]),  # a later unit reading the same store waits for the same parts
    ]


def test_slurm_arrays_of_units_waiting_for_parts_depend_on_the_part_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    fake = f"""#!/bin/sh
n=$(ls {scripts} | wc -l)
n=$((n + 101))
cp "$1" {scripts}/$n
echo "Submitted batch job $n"
"""
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text(fake)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm, "_collect", lambda *args: [])  # no cluster to wait for
    path = grid_file(
        tmp_path,
        "grid: [{protocol: knn, models: random_r18, datasets: [bach, chexpert]}]",
    )
    bach, chexpert = load_grid(path).cells
    parts = _parts(chexpert, 3, {**chexpert.resources, "timeout_min": 30})
    units = schedule(make_units([bach, chexpert]), SplitPlan({chexpert.key: parts}), bool)
    said: list[str] = []
    assert slurm.run_submitit(_context(tmp_path), units, "slurm", say=said.append) == []
    assert said == [
        "submitted job array 101: 3 extraction part task(s)",
        "submitted job array 102: 1 unit task(s)",
        "submitted job array 103: 1 unit task(s), after 101",
    ]
    texts = {int(p.name): p.read_text() for p in scripts.iterdir()}
    assert "#SBATCH --time=30" in texts[101] and "--dependency" not in texts[101]
    assert "--dependency" not in texts[102]  # bach waits for nothing
    assert "#SBATCH --dependency=afterany:101" in texts[103]


class _Asked(Exception):
    """What a job asked the feature store for (raised instead of loading a model)."""


@pytest.mark.parametrize(
    ("protocol", "options"),
    [
        ("few-shot", {"n_way": 2, "n_support": 2, "n_query": 2}),
        ("few-shot", {"n_way": 2, "n_support": 2, "n_query": 2, "resize": "shorter"}),
        ("knn", {"ks": (3,)}),
        ("linear", {}),
    ],
)
def test_a_part_names_the_store_its_cells_job_reads(
    protocol: str,
    options: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medtransfer.jobs import common
    from medtransfer.jobs.registry import get_job
    from medtransfer.sweep.parts import store_request

    def asked(roots: object, request: Any) -> None:
        raise _Asked(
            request.data.manifest.rows_hash,
            request.model,
            request.preprocessing,
            request.run,
            request.protocol,
        )

    monkeypatch.setattr(common, "prepare_features", asked)
    from medtransfer.data.synth.primitives import SynthOptions
    from medtransfer.data.synth.writers import synthesize

    data = tmp_path / "data"
    synthesize("shenzhencxr", data, SynthOptions(per_class=8, size=32))
    roots = resolve_roots(data, tmp_path / "cache", tmp_path / "results")
    job = get_job(protocol)
    given = {"dataset": "shenzhencxr", "model": "random_r18", "image_size": 32, **options}
    resolved = job.resolve(given, "none")
    with pytest.raises(_Asked) as caught:
        job.run(roots, *resolved)
    request = store_request(roots, protocol, resolved)
    wanted = (request.data.manifest.rows_hash, request.model, request.preprocessing)
    assert caught.value.args == (*wanted, request.run, request.protocol)
