"""An empty class is an error in every job (naming where its images should be), a problem
for ``datasets check``, and left out, recorded, with ``--drop-empty-classes``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.cli import main

JOBS = {
    "few-shot": ["--n-way", "2", "--n-support", "2", "--n-query", "2", "--iter-num", "5"],
    "linear": ["-c", "1"],
    "knn": ["--k", "2"],
    "finetune": ["--steps", "1"],
}
FAST = ["-m", "random_r18", "-i", "32", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder with classes ``ants`` and ``bees`` (8 images each) and ``empty``."""
    root = tmp_path_factory.mktemp("user") / "insects"
    rng = np.random.default_rng(0)
    for name in ("ants", "bees"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{i}.png")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_refuses_an_empty_class_folder_by_name(
    job: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([job, "-d", f"imagefolder:{tree}", *FAST, *JOBS[job]])
    err = capsys.readouterr().err
    assert code == 2
    assert f"class 'empty' has no image ({tree / 'empty'}: class folder holds no image" in err
    assert "--drop-empty-classes" in err and "Traceback" not in err


def test_check_lists_the_empty_class_once(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "check", "-d", f"imagefolder:{tree}", "--no-progress"]) == 1
    out = capsys.readouterr().out
    empty = [line for line in out.splitlines() if "[empty-class]" in line]
    assert empty == [f"  [empty-class] {tree / 'empty'}: class folder holds no image files"]


def test_dropping_leaves_the_class_out_and_records_it(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["few-shot", "-d", f"imagefolder:{tree}", *FAST, *JOBS["few-shot"]]
    assert main([*args, "--drop-empty-classes"]) == 0
    record_path = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("record: "))
    record = json.loads(record_path.read_text())
    assert record["class_names"] == ["ants", "bees"]
    assert record["params"]["drop_empty_classes"] is True
    assert record["params"]["dropped_classes"] == ["empty"]


def test_the_choice_is_part_of_the_manifest_hash(tree: Path) -> None:
    from medtransfer.data.catalog import resolve_dataset
    from medtransfer.data.manifest import build_manifest

    full = tree.parent / "full"
    if not full.exists():
        full.mkdir()
        for name in ("ants", "bees"):
            (full / name).symlink_to(tree / name)
    resolved = resolve_dataset(f"imagefolder:{full}", tree.parent)
    plain = build_manifest(resolved)
    flagged = build_manifest(resolved, empty_classes="drop")  # nothing to drop here
    assert plain.table.equals(flagged.table) and plain.hash != flagged.hash
    assert flagged.params["drop_empty_classes"] is True and "dropped_classes" not in flagged.params


def test_a_catalog_layout_with_an_empty_class_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    synth = ["datasets", "synth", "-d", "shenzhencxr", "--out", str(data)]
    assert main([*synth, "--per-class", "4", "--size", "24"]) == 0
    csv = data / "shenzhencxr" / "shenzhen_metadata.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame[frame["findings"] == "normal"].to_csv(csv, index=False)  # no tuberculosis row left
    args = ["--data-root", str(data), "few-shot", "-d", "shenzhencxr", *FAST, *JOBS["few-shot"]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "shenzhencxr: class 'tuberculosis' has no image" in err
    assert str(data / "shenzhencxr") in err
    assert main([*args, "--drop-empty-classes", "--n-way", "1"]) == 0
    assert "record:" in capsys.readouterr().out
