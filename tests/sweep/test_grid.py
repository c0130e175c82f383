"""Grid files: one error listing every problem with its place; expansion into cells."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from medtransfer.jobs.registry import JOBS
from medtransfer.sweep.grid import DEFAULT_RESOURCES, load_grid
from medtransfer.sweep.source import GridError


def grid_file(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, jobs=None) -> list[str]:
    with pytest.raises(GridError) as caught:
        load_grid(path, jobs)
    head, *lines = str(caught.value).splitlines()
    assert head.endswith(f"{len(lines)} problem(s); nothing was run.")
    return [line.strip().removeprefix(f"{path}:") for line in lines]


def test_every_bad_entry_is_listed_once_with_its_line_and_column(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        defaults: {device: cpu, imagesize: 32}
        grid:
          - protocol: few-shot
            models: [random_r18, mimc-chexpert_lr_0.1]
            datasets: [shenzhencxe, montgomerycxr]
            options: {n_way: 2, n_wya: 3, pool: everything, n_query: many}
          - protocol: segmentation
            models: [moco-v2]
          - protocol: knn
            models: random_r18
            datasets: icahllenge_amd
            slurm: {timeout_min: 10, gpus: 2}
            colour: blue
        """,
    )
    assert problems(path) == [
        "1:25: unknown option 'imagesize': no registered job has it (did you mean 'image_size'?)",
        "4:26: unknown model 'mimc-chexpert_lr_0.1' (did you mean 'mimic-chexpert_lr_0.1'?)",
        "5:16: unknown dataset 'shenzhencxe' (did you mean 'shenzhencxr'?)",
        "6:25: unknown option 'n_wya' (did you mean 'n_way'?)",
        "6:35: pool 'everything' is not one of all, train, test, original",
        "6:53: n_query takes an integer, got 'many'",
        "7:5: protocol 'segmentation' is not a registered job of this medtransfer (registered: "
        f"{', '.join(job.name for job in JOBS)}); use a version that has it, or leave the "
        "block out",
        "11:5: unknown dataset 'icahllenge_amd' (did you mean 'ichallenge_amd'?)",
        "12:30: unknown Slurm resource 'gpus'; resources: partition, gpus_per_node, "
        "cpus_per_task, mem_gb, timeout_min, array_parallelism, account, qos, constraint, setup",
        "13:5: unknown key 'colour'; keys here: protocol, models, datasets, seeds, vary, preset, "
        "options, when, exclude, slurm, split_extraction, stage",
    ]


def test_yaml_mistakes_are_refused_where_they_are(tmp_path: Path) -> None:
    with pytest.raises(GridError, match=r"grid.yaml:3:1: not valid YAML"):
        load_grid(grid_file(tmp_path, "grid: [\n  {protocol: knn\n"))
    twice = grid_file(tmp_path, "grid: []\ngrid: []\n", "twice.yaml")
    with pytest.raises(GridError, match=r"twice.yaml:2:1: the key 'grid' is written twice"):
        load_grid(twice)
    merge = grid_file(tmp_path, "a: &a {protocol: knn}\ngrid: [{<<: *a}]\n", "merge.yaml")
    with pytest.raises(GridError, match=r"merge.yaml:2:9: merge keys \(<<\) are not supported"):
        load_grid(merge)


def test_blocks_expand_to_cells_with_overrides_exclusions_and_axes(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        name: demo-grid
        defaults: {image_size: 32, device: cpu, temperature: 0.1}
        slurm: {partition: gpu, timeout_min: 30}
        anchors:
          two: &two [shenzhencxr, montgomerycxr]
        grid:
          - protocol: few-shot
            models: [[random_r18, moco], random_r50]
            datasets: [*two, bach]
            seeds: [0, 1]
            options: {n_support: 20, n_way: 2}
            when:
              - match: {dataset: bach}
                options: {n_way: 4}
                slurm: {timeout_min: 90}
            exclude:
              - {model: random_r50, dataset: [montgomerycxr, bach]}
          - protocol: finetune
            models: random_r18
            datasets: bach
            vary: {lr: [1e-2, 3e-5]}
            stage: 1
        """,
    )
    grid = load_grid(path)
    assert grid.name == "demo-grid" and grid.synthetic is None and grid.merged == 0
    few = [c for c in grid.cells if c.protocol == "few-shot"]
    # 3 models x 3 datasets x 2 seeds, less random_r50 on two datasets (x 2 seeds)
    assert len(few) == 18 - 4
    models = {c.raw["model"] for c in few}
    assert models == {"random_r18", "moco-v2", "random_r50"}  # aliases resolved
    bach = [c for c in few if c.raw["dataset"] == "bach"]
    assert {c.raw["n_way"] for c in bach} == {4} and {c.raw["n_way"] for c in few} == {2, 4}
    assert all(c.resources["timeout_min"] == 90 for c in bach)
    assert few[0].resources == {**DEFAULT_RESOURCES, "partition": "gpu", "timeout_min": 30}
    assert {c.raw["seed"] for c in few} == {0, 1}
    assert few[0].raw["image_size"] == 32 and "temperature" not in few[0].raw  # not few-shot's
    assert few[0].where == f"{path}:7:5" and "n_support=20" in few[0].label
    tune = [c for c in grid.cells if c.protocol == "finetune"]
    assert [c.raw["lr"] for c in tune] == [0.01, 3e-05] and {c.stage for c in tune} == {1}
    assert "seeds" not in tune[0].raw  # finetune's seeds field is set only by `seeds:`
    assert len({c.key for c in grid.cells}) == len(grid.cells)


def test_a_cell_written_twice_is_kept_once(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        grid:
          - {protocol: knn, models: random_r18, datasets: [bach, shenzhencxr]}
          - {protocol: knn, models: random_r18, datasets: bach, options: {temperature: 0.07}}
        """,
    )
    grid = load_grid(path)
    assert len(grid.cells) == 2 and grid.merged == 1  # 0.07 is the default: the same cell


def test_seeds_go_to_the_seeds_list_of_a_job_without_a_seed_field(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path, "grid: [{protocol: finetune, models: random_r18, datasets: bach, seeds: [3]}]"
    )
    (cell,) = load_grid(path).cells
    assert cell.raw["seeds"] == [3] and cell.options()[2].seeds == (3,)


def test_what_a_job_refuses_is_reported_per_block(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        grid:
          - {protocol: knn, models: [random_r18, random_r50], datasets: bach, preset: paper}
          - {protocol: knn, datasets: bach}
          - {protocol: few-shot, models: random_r18, datasets: bach, seeds: [x]}
          - {protocol: knn, models: random_r18, datasets: bach, options: {model: random_r18}}
          - {protocol: knn, models: random_r18, datasets: bach, when: [{match: {k: 3}}]}
        """,
    )
    assert problems(path) == [
        "2:71: preset 'paper' is not one of none, original",
        "3:5: knn needs model: add models: [...]",
        "4:70: a seed is an integer, got 'x'",
        "5:67: set model through `models:`, not as an option",
        "6:73: 'k' is not an axis of this block; axes: model, dataset",
    ]
    offering = [dataclasses.replace(job, presets={"original": {"ks": (5,)}}) for job in JOBS]
    text = "preset: original\ngrid: [{protocol: knn, models: random_r18, datasets: bach}]"
    (cell,) = load_grid(grid_file(tmp_path, text, "ok.yaml"), offering).cells
    assert cell.preset == "original" and "[original]" in cell.label


def test_synthetic_data_needs_a_synthetic_layout(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        f"synthetic: true\ngrid: [{{protocol: knn, models: random_r18, datasets: "
        f"'imagefolder:{tmp_path}'}}]\n",
    )
    (line,) = problems(path)
    assert line.startswith("1:1: synthetic: no synthetic layout for 'imagefolder:")


def test_a_cell_rebuilds_its_options_from_what_the_file_says(tmp_path: Path) -> None:
    path = grid_file(
        tmp_path,
        """\
        grid:
          - protocol: perceptual-distance
            options: {from_reconstructions: true, nets: none}
          - {protocol: knn, models: random_r18, datasets: bach, options: {weights: w.pt}}
        """,
    )
    scores, knn = load_grid(path).cells
    assert scores.raw["nets"] == "none" and scores.options()[0].nets == ()  # parsed again
    assert scores.reuse is None  # it reads no features
    assert knn.raw["weights"] == str(tmp_path / "w.pt")  # from the grid file's folder
    assert knn.options()[1].weights == tmp_path / "w.pt"
