"""The perceptual-distance job: pairs from a CSV or from reconstruction records, LPIPS
equal to the lpips package's, one record per group, the original's tables, offline SSIM."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_msssim import ssim as reference_ssim

from medtransfer.config import Roots
from medtransfer.data.images import load_image
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError, DatasetError, DownloadError
from medtransfer.jobs.options import DataOptions
from medtransfer.jobs.perceptual_distance import PerceptualOptions, run_perceptual_distance
from medtransfer.jobs.reconstruct import ReconstructOptions, run_reconstruct
from medtransfer.results.records import outputs_folder
from tests.jobs.conftest import MODEL, RUN, SIZE
from tests.support.http_server import serve_directory
from tests.support.lpips_trunks import reference_lpips, serve_from, write_standins
from tests.support.threads import one_thread  # noqa: F401  (autouse)

PAIR_SIZE = 64


def _picture(path: Path, seed: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def pairs_csv(tmp_path: Path) -> Path:
    """Three pairs in two groups; images of other sizes than the crop (resized, cropped)."""
    for index in range(3):
        _picture(tmp_path / f"ref{index}.png", index, (80, 96))
        _picture(tmp_path / f"rec{index}.png", 10 + index, (72, 72))
    rows = [
        "reference,reconstruction,model,dataset",
        "ref0.png,rec0.png,moco-v2,chexpert",
        "ref1.png,rec1.png,moco-v2,chexpert",
        f"{tmp_path / 'ref2.png'},rec2.png,swav,bach",
    ]
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _tensors(paths: list[Path]) -> torch.Tensor:
    crop = Preprocessing(PAIR_SIZE, resize="shorter")
    return torch.stack([crop(load_image(path)) for path in paths])


def test_pairs_scored_as_the_lpips_package_scores_them(
    roots: Roots, pairs_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = write_standins(tmp_path / "served")
    options = PerceptualOptions(pairs=pairs_csv, image_size=PAIR_SIZE)
    with serve_directory(tmp_path / "served") as server:
        serve_from(monkeypatch, server.base_url, served)
        result = run_perceptual_distance(roots, options, dataclasses.replace(RUN, batch_size=2))
    refs = _tensors([pairs_csv.parent / f"ref{i}.png" for i in range(3)])
    recs = _tensors([pairs_csv.parent / f"rec{i}.png" for i in range(3)])
    expected = {}
    with torch.no_grad():
        for net in ("alex", "vgg", "squeeze"):
            expected[net] = reference_lpips(net)(refs * 2 - 1, recs * 2 - 1).reshape(-1)
    expected_ssim = reference_ssim(refs, recs, data_range=1.0, size_average=False)

    records = sorted((roots.results / "perceptual-distance").glob("*/*/*.json"))
    assert [p.parent.parent.name + "/" + p.parent.name for p in records] == [
        "moco-v2/chexpert",
        "swav/bach",
    ]
    assert result.record["model"] == "swav" and result.record["protocol"] == "perceptual-distance"
    moco = json.loads(records[0].read_text())
    rows = moco["images"] + result.record["images"]
    for index, row in enumerate(rows):
        for net in ("alex", "vgg", "squeeze"):
            assert row[f"lpips_{net}"] == pytest.approx(expected[net][index].item(), rel=1e-6)
        average = sum(row[f"lpips_{net}"] for net in ("alex", "vgg", "squeeze")) / 3
        assert row["lpips_average"] == pytest.approx(average)
        assert row["ssim"] == pytest.approx(expected_ssim[index].item(), rel=1e-6)
        assert row["ms_ssim"] is None  # 64 px is too small for five scales
    assert moco["metrics"]["lpips_vgg"] == pytest.approx(expected["vgg"][:2].mean().item())
    assert moco["metrics"]["images"] == 2 and moco["metrics"]["ms_ssim"] is None
    params = moco["params"]
    assert params["lpips"]["version"] == "0.1" and params["source"] == "pairs"
    assert params["metric"] == "lpips_average"
    assert set(params["lpips"]["trunks"]) == {"alex", "vgg", "squeeze"}

    tables = roots.results / "perceptual-distance"
    with open(tables / "alexnet.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["model", "chexpert", "bach"]
    assert table[1][0] == "moco-v2" and table[1][2] == ""
    assert float(table[1][1]) == pytest.approx(moco["metrics"]["lpips_alex"])
    assert table[2][0] == "swav" and table[2][1] == "" and table[2][2] != ""
    for name in ("vgg", "squeezenet", "average", "ssim"):
        assert (tables / f"{name}.csv").is_file()
    assert not (tables / "ms_ssim.csv").exists()
    assert any(line.startswith("tables") for line in result.lines)
    assert (
        sum(line.startswith(("moco-v2 on chexpert", "swav on bach")) for line in result.lines) == 2
    )


def test_reconstructions_scored_offline_with_ssim_only(
    job_roots: Roots, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = ReconstructOptions(
        layer="layer3", steps=2, images=2, image_size=SIZE, code_size=SIZE, depth=2
    )
    made = run_reconstruct(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"alexnet-owt-7be5be79\.pth"):
        run_perceptual_distance(job_roots, PerceptualOptions(from_reconstructions=True), RUN)
    scored = PerceptualOptions(from_reconstructions=True, nets=(), image_size=SIZE, tables=tmp_path)
    result = run_perceptual_distance(job_roots, scored, RUN)
    mine = [
        r for r in (job_roots.results / "perceptual-distance").glob("*/*/*.json")
        if str(made.record_path) in r.read_text()
    ]  # fmt: skip
    assert len(mine) == 1
    record = json.loads(mine[0].read_text())
    assert record["params"]["reconstruction_record"] == str(made.record_path)
    assert record["weights_sha256"] == made.record["weights_sha256"]
    folder = outputs_folder(made.record_path)
    for row, image in zip(record["images"], made.record["images"], strict=True):
        target = _tensors_at([folder / image["files"]["target"]], SIZE)
        rebuilt = _tensors_at([folder / image["files"]["reconstruction"]], SIZE)
        expected = reference_ssim(target, rebuilt, data_range=1.0, size_average=False).item()
        assert row["ssim"] == pytest.approx(expected, rel=1e-6)
        assert "lpips_alex" not in row and "lpips_average" not in row
    with open(tmp_path / "ssim.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0][0] == "model" and "montgomerycxr" in table[0]
    assert [path.name for path in tmp_path.iterdir()] == ["ssim.csv"]
    assert result.lines[-1].startswith("tables")

    # the results table reads both records, each with its main metric
    from medtransfer.results.collect import read_records
    from medtransfer.results.table import long_table

    records, _ = read_records(job_roots.results)
    table = long_table(records)
    main = table[table["main"]].set_index("record")["metric"]
    assert main[str(made.record_path)] == "feature_mse"
    assert main[str(mine[0])] == "ssim"  # --nets none; lpips_average otherwise


def _tensors_at(paths: list[Path], size: int) -> torch.Tensor:
    crop = Preprocessing(size, resize="shorter")
    return torch.stack([crop(load_image(path)) for path in paths])


def test_bad_input_is_named(roots: Roots, pairs_csv: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of --pairs"):
        run_perceptual_distance(roots, PerceptualOptions(), RUN)
    both = PerceptualOptions(pairs=pairs_csv, from_reconstructions=True)
    with pytest.raises(ConfigError, match="exactly one of --pairs"):
        run_perceptual_distance(roots, both, RUN)
    with pytest.raises(ConfigError, match="--nets none together with --no-ssim"):
        run_perceptual_distance(roots, PerceptualOptions(pairs=pairs_csv, nets=(), ssim=False), RUN)
    with pytest.raises(ConfigError, match="no reconstruction record"):
        run_perceptual_distance(roots, PerceptualOptions(from_reconstructions=True, nets=()), RUN)
    bad = pairs_csv.with_name("bad.csv")
    bad.write_text("ref,reconstruction\na.png,b.png\n")
    with pytest.raises(ConfigError, match=r"bad.csv has no column\(s\) reference; its header"):
        run_perceptual_distance(roots, PerceptualOptions(pairs=bad, nets=()), RUN)
    bad.write_text("reference,reconstruction\nref0.png,rec0.png\nref1.png,gone.png\n")
    with pytest.raises(DatasetError, match=r"bad.csv, line 3: the reconstruction file .*gone.png"):
        run_perceptual_distance(roots, PerceptualOptions(pairs=bad, nets=()), RUN)


def test_net_lists() -> None:
    from medtransfer.jobs.perceptual_distance import net_list

    assert net_list("vgg, alex,vgg", "--nets") == ("vgg", "alex")
    assert net_list("none", "--nets") == ()
    with pytest.raises(ConfigError, match="--nets takes a comma-separated list"):
        net_list("resnet", "--nets")


def test_the_command_line_runs_a_job_without_a_model(
    roots: Roots, pairs_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """perceptual-distance takes no -m: the command runs it once, offline, SSIM only."""
    from medtransfer.cli import main

    args = ["perceptual-distance", "--pairs", str(pairs_csv), "--nets", "none"]
    assert main([*args, "-i", str(PAIR_SIZE), "--tables", str(tmp_path / "tables")]) == 0
    out = capsys.readouterr().out
    assert "moco-v2 on chexpert (2 image(s)): SSIM" in out and "swav on bach" in out
    assert out.strip().splitlines()[-1].startswith("record: ")
