"""Every catalog dataset, end to end: synthetic tree -> check -> few-shot -> feature store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtransfer.cli import main
from medtransfer.data.catalog import CATALOG
from medtransfer.data.synth.writers import WRITERS

SYNTHESISABLE = [spec.name for spec in CATALOG if spec.name in WRITERS]


def test_every_catalog_dataset_can_be_synthesised() -> None:
    assert {spec.name for spec in CATALOG} == set(SYNTHESISABLE) == set(WRITERS)


@pytest.mark.parametrize("name", SYNTHESISABLE)
def test_check_and_few_shot_on_the_published_layout(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    synth = ["datasets", "synth", "-d", name, "--out", str(data), "--per-class", "6"]
    assert main([*synth, "--size", "32"]) == 0
    assert main(["--data-root", str(data), "datasets", "check", "-d", name]) == 0, (
        capsys.readouterr().out
    )
    few_shot = [
        *("--data-root", str(data), "few-shot", "-d", name, "-m", "random_r18"),
        *("--n-way", "2", "--n-support", "2", "--n-query", "2", "--iter-num", "20"),
        *("--image-size", "32", "--device", "cpu", "--no-progress"),
    ]
    assert main(few_shot) == 0
    out = capsys.readouterr().out
    record = json.loads(Path(out.strip().splitlines()[-1].removeprefix("record: ")).read_text())
    assert record["dataset"] == name and record["features_extracted"] is True
    assert main(few_shot) == 0
    assert "read from the feature store" in capsys.readouterr().out


def test_user_data_imagefolder_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from medtransfer.data.synth.primitives import class_pattern, write_image

    rng = np.random.default_rng(0)
    rows = ["path,label,patient"]
    for label, name in enumerate(("benign", "malignant")):
        for i in range(6):
            relative = f"tree/{name}/{i:02d}.png"
            write_image(class_pattern(rng, 32, label, 2), tmp_path / relative)
            rows.append(f"{relative},{name},p{label}{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for dataset in (f"imagefolder:{tmp_path / 'tree'}", f"csv:{tmp_path / 'labels.csv'}"):
        assert main(["datasets", "check", "-d", dataset, "--no-progress"]) == 0
        few_shot = [
            *("few-shot", "-d", dataset, "-m", "random_r18", "--n-way", "2"),
            *("--n-support", "2", "--n-query", "2", "--iter-num", "10", "--image-size", "32"),
            *("--device", "cpu", "--no-progress"),
        ]
        assert main(few_shot) == 0
        out = capsys.readouterr().out
        record = json.loads(Path(out.strip().splitlines()[-1].removeprefix("record: ")).read_text())
        assert record["dataset"] == dataset
