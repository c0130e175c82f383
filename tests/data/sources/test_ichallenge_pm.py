"""iChallenge-PM (PALM): the doubled folder, the optional custom CSV, label rules, problems."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.data.images import load_image
from medtransfer.data.manifest import Manifest
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.ichallenge_pm import SPECS, read_ichallenge_pm
from medtransfer.data.spec import ACCURACY
from medtransfer.errors import DatasetError

PM = SPECS[0]
PALM = "PALM-Training400/PALM-Training400"
PALM_CSV = "PALM-Training400/fovea_location_csv.csv"


def test_spec_facts() -> None:
    assert PM.name == "ichallenge_pm"
    assert {"pm", "palm"} <= set(PM.aliases)
    assert PM.metric == ACCURACY
    assert PM.patients == ""
    assert PM.label_options == ("pm_positive",)
    assert PM.few_shot_resize == "square"


def test_pm_synthetic_tree_and_label_policies(
    tmp_path: Path, synth_tree: Callable[..., Path], manifest_of: Callable[..., Manifest]
) -> None:
    root = synth_tree(PM, tmp_path, size=20, per_class=2)
    files = sorted(p.name for p in (root / PALM).iterdir())
    assert files == ["H0001.jpg", "H0002.jpg", "N0001.jpg", "N0002.jpg", "P0001.jpg", "P0002.jpg"]
    default = manifest_of(PM, root)
    assert default.class_names == ("non_pm", "pm")
    assert default.problems == ()
    assert default.params["label_policy"] == {"pm_positive": "P"}
    labels = dict(zip(default.table["path"].str[-9], default.table["label"], strict=False))
    assert default.table["label"].tolist() == [0, 0, 0, 0, 1, 1]  # H, H, N, N, P, P
    assert labels == {"H": 0, "N": 0, "P": 1}
    both = manifest_of(PM, root, labels=LabelOptions(pm_positive="HP"))
    assert both.table["label"].tolist() == [1, 1, 0, 0, 1, 1]
    assert both.params["label_policy"] == {"pm_positive": "HP"}
    assert both.hash != default.hash
    for path in default.absolute_paths():
        assert load_image(path).mode == "RGB"
    with pytest.raises(DatasetError, match=r"'PH'.*--pm-positive"):
        read_ichallenge_pm(root, LabelOptions(pm_positive="PH"))


def test_pm_unknown_prefix_is_dropped_with_a_problem(
    tmp_path: Path, synth_tree: Callable[..., Path]
) -> None:
    root = synth_tree(PM, tmp_path, size=20, per_class=1)
    shutil.copy(root / PALM / "N0001.jpg", root / PALM / "X0001.jpg")
    source = read_ichallenge_pm(root, LabelOptions())
    assert {(p.kind, p.file) for p in source.problems} == {("unknown-label", f"{PALM}/X0001.jpg")}
    assert len(source.table) == 3


def _palm_csv(root: Path, names: list[str], raw: list[int]) -> None:
    frame = pd.DataFrame(
        {
            "ID": range(1, len(names) + 1),
            "imgName": names,
            "Fovea_X": 1.0,
            "Fovea_Y": 2.0,
            "label": raw,
        }
    )
    frame.to_csv(root / PALM_CSV, index=False)


def test_pm_custom_csv_order_and_raw_label_checks(
    tmp_path: Path,
    synth_tree: Callable[..., Path],
    manifest_of: Callable[..., Manifest],
    original_split: Callable[[list[str]], dict[str, str]],
) -> None:
    root = synth_tree(PM, tmp_path, size=20, per_class=2)
    names = ["P0002.jpg", "N0001.jpg", "H0001.jpg", "P0001.jpg", "H0002.jpg", "N0002.jpg"]
    raw = {"N": 0, "H": 1, "P": 2}  # the natural encoding: the original's rule is P-only
    _palm_csv(root, names, [raw[n[0]] for n in names])
    manifest = manifest_of(PM, root, split_policy="original")
    assert manifest.problems == ()
    assert manifest.table["path"].str[-9:].tolist() == names
    split = dict(zip(manifest.table["path"].str[-9:], manifest.table["split"], strict=True))
    assert split == original_split(names)
    # under HP the H rows disagree with the original's rule and the fix names the flag
    source = read_ichallenge_pm(root, LabelOptions(pm_positive="HP"))
    mismatch = [p for p in source.problems if p.kind == "label-mismatch"]
    assert [p.file for p in mismatch] == [
        "fovea_location_csv.csv row 4 (H0001.jpg)",
        "fovea_location_csv.csv row 6 (H0002.jpg)",
    ]
    assert all("--pm-positive P" in p.fix for p in mismatch)


def test_pm_csv_problems_name_rows_and_files(
    tmp_path: Path,
    synth_tree: Callable[..., Path],
    original_split: Callable[[list[str]], dict[str, str]],
) -> None:
    root = synth_tree(PM, tmp_path, size=20, per_class=2)
    names = ["H0001.jpg", "N0001.jpg", "P0001.jpg", "H0002.jpg", "N0001.jpg", "Q0009.jpg"]
    _palm_csv(root, names, [2, 0, 2, 7, 0, 2])  # H encoded as 2 (the README's rule)
    source = read_ichallenge_pm(root, LabelOptions())
    found = {(p.kind, p.file) for p in source.problems}
    assert ("label-mismatch", "fovea_location_csv.csv row 2 (H0001.jpg)") in found
    assert any("--pm-positive HP" in p.fix for p in source.problems if p.kind == "label-mismatch")
    assert ("unknown-label", "fovea_location_csv.csv row 5 (H0002.jpg)") in found
    assert ("duplicate", "fovea_location_csv.csv row 6 (N0001.jpg)") in found
    assert ("unknown-label", "fovea_location_csv.csv row 7 (Q0009.jpg)") in found
    assert ("unlisted", f"{PALM}/N0002.jpg") in found
    assert ("unlisted", f"{PALM}/P0002.jpg") in found
    assert source.table["path"].str[-9:].tolist() == names[:4]
    # rows kept keep the original's split of the full CSV
    expected = original_split([f"{i}" for i in range(6)])
    table = source.table
    assert table["original_split"].tolist() == [
        {"val": "train"}.get(expected[str(i)], expected[str(i)]) for i in range(4)
    ]


def test_pm_layout_errors_name_the_culprit(tmp_path: Path, synth_tree: Callable[..., Path]) -> None:
    root = synth_tree(PM, tmp_path, size=20, per_class=1)
    (root / PALM_CSV).write_text("ID\n1\n")
    with pytest.raises(DatasetError, match=r"fovea_location_csv\.csv.*at least 2 columns"):
        read_ichallenge_pm(root, LabelOptions())
    (root / PALM_CSV).unlink()
    # images only once nested: PALM-Training400/<img>
    for path in (root / PALM).iterdir():
        path.rename(root / "PALM-Training400" / path.name)
    (root / PALM).rmdir()
    with pytest.raises(DatasetError, match=r"names the folder twice"):
        read_ichallenge_pm(root, LabelOptions())
    # images directly in the dataset folder
    for path in (root / "PALM-Training400").iterdir():
        path.rename(root / path.name)
    with pytest.raises(DatasetError, match=r"holds images directly"):
        read_ichallenge_pm(root, LabelOptions())
    # three levels
    deep = synth_tree(PM, tmp_path / "deep", size=20, per_class=1)
    inner = deep / PALM / "PALM-Training400"
    inner.mkdir()
    for path in (deep / PALM).glob("*.jpg"):
        path.rename(inner / path.name)
    with pytest.raises(DatasetError, match=r"too deep"):
        read_ichallenge_pm(deep, LabelOptions())
