"""iChallenge-AMD and iChallenge-PM (PALM): layouts, optional CSVs, label rules, problems."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.images import load_image
from medtransfer.data.manifest import build_manifest
from medtransfer.data.sources.base import LabelOptions
from medtransfer.data.sources.ichallenge import SPECS, read_ichallenge_amd, read_ichallenge_pm
from medtransfer.data.spec import ACCURACY, ResolvedDataset
from medtransfer.data.synthetic import SynthOptions
from medtransfer.errors import DatasetError

AMD, PM = SPECS
PALM = "PALM-Training400/PALM-Training400"
PALM_CSV = "PALM-Training400/fovea_location_csv.csv"


def _synth(spec, tmp_path: Path, per_class: int = 3, seed: int = 0) -> Path:
    root = tmp_path / spec.folder
    spec.synth(root, SynthOptions(per_class=per_class, size=20, seed=seed))
    return root


def _manifest(spec, root: Path, labels: LabelOptions | None = None, **kwargs):
    return build_manifest(ResolvedDataset(spec, root), labels=labels or LabelOptions(), **kwargs)


def _expected_original(rows: list[str]) -> dict[str, str]:
    """The original's split of index rows, computed as its code does (spec §1 conventions)."""
    frame = pd.DataFrame({"row": rows}).sample(frac=1, random_state=42).reset_index(drop=True)
    n_train = math.floor(0.8 * len(frame))
    split = {row: "train" for row in frame["row"][:n_train]}
    split.update({row: "test" for row in frame["row"][n_train:]})
    indices = list(range(n_train))
    np.random.seed(0)
    np.random.shuffle(indices)
    for i in indices[: math.floor(0.2 * n_train)]:
        split[frame["row"][i]] = "val"
    return split


def _kinds_and_files(problems) -> set[tuple[str, str]]:
    return {(p.kind, p.file) for p in problems}


def test_spec_facts() -> None:
    assert (AMD.name, PM.name) == ("ichallenge_amd", "ichallenge_pm")
    assert "amd" in AMD.aliases and {"pm", "palm"} <= set(PM.aliases)
    assert AMD.metric == PM.metric == ACCURACY
    assert AMD.patients == PM.patients == ""
    assert PM.label_options == ("pm_positive",)
    assert AMD.few_shot_resize == PM.few_shot_resize == "square"


# --------------------------------------------------------------------------- AMD


def test_amd_synthetic_tree_loads(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=3)
    manifest = _manifest(AMD, root)
    assert manifest.class_names == ("non_amd", "amd")
    assert manifest.problems == ()
    table = manifest.table
    assert len(table) == 6
    assert (table["patient"] == "").all()
    amd = table["path"].str.startswith("Training400/AMD/A")
    assert (table.loc[amd, "label"] == 1).all() and amd.sum() == 3
    assert table.loc[~amd, "path"].str.startswith("Training400/Non-AMD/N").all()
    assert (table.loc[~amd, "label"] == 0).all()
    csv = pd.read_csv(root / "amd_labels.csv")
    assert csv.shape == (6, 2)
    for path in manifest.absolute_paths():
        assert load_image(path).mode == "RGB"


def _pale_share(paths: list[Path]) -> list[float]:
    """Share of yellow/white pixels per image (drusen, atrophy), (n,)."""
    out = []
    for path in paths:
        rgb = np.asarray(load_image(path), dtype=float)
        out.append(((rgb[..., 1] > 150) & (rgb[..., 2] > 70)).mean())
    return out


def test_amd_class_signal(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=4, seed=1)
    manifest = _manifest(AMD, root)
    means = pd.Series(_pale_share(manifest.absolute_paths())).groupby(manifest.labels).mean()
    assert means[1] > 2 * means[0]


def test_amd_without_csv_reads_the_folders_in_sorted_order(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=3)
    with_csv = read_ichallenge_amd(root, LabelOptions()).table
    (root / "amd_labels.csv").unlink()
    from_folders = read_ichallenge_amd(root, LabelOptions()).table
    assert from_folders["path"].tolist() == sorted(
        from_folders["path"], key=lambda p: p.rsplit("/", 1)[1]
    )
    pd.testing.assert_frame_equal(with_csv, from_folders)


@pytest.mark.parametrize("with_csv", [True, False])
def test_amd_original_split_matches_the_originals_shuffle(tmp_path: Path, with_csv: bool) -> None:
    root = _synth(AMD, tmp_path, per_class=6)
    if with_csv:
        # a user's CSV in another order: the original shuffles the CSV's rows
        csv = pd.read_csv(root / "amd_labels.csv").iloc[::-1]
        csv.to_csv(root / "amd_labels.csv", index=False)
        rows = csv["imgName"].tolist()
    else:
        (root / "amd_labels.csv").unlink()
        rows = sorted(p.stem for p in (root / "Training400").rglob("*.jpg"))
    manifest = _manifest(AMD, root, split_policy="original")
    stems = manifest.table["path"].str.extract(r"/(\w+)\.jpg$")[0]
    assert stems.tolist() == rows
    assert dict(zip(stems, manifest.table["split"], strict=True)) == _expected_original(rows)


def test_amd_csv_disagreements_are_problems(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=3)
    csv = pd.read_csv(root / "amd_labels.csv", dtype=str)
    csv.loc[3, "label"] = "1"  # N0001 called AMD: prefix and folder disagree
    csv.loc[4, "label"] = "2"  # N0002: unknown label
    csv = pd.concat([csv.drop(index=5), csv.iloc[[0]]])  # N0003 unlisted, A0001 twice
    csv.to_csv(root / "amd_labels.csv", index=False)
    source = read_ichallenge_amd(root, LabelOptions())
    found = _kinds_and_files(source.problems)
    assert ("label-mismatch", "amd_labels.csv row 5 (N0001)") in found
    mismatch = [p for p in source.problems if p.file == "amd_labels.csv row 5 (N0001)"]
    assert any("Training400/Non-AMD/" in p.detail for p in mismatch)  # the folder check
    assert any("file name says non_amd" in p.detail for p in mismatch)  # the prefix check
    assert ("unknown-label", "amd_labels.csv row 6 (N0002)") in found
    assert ("duplicate", "amd_labels.csv row 7 (A0001)") in found
    assert ("unlisted", "Training400/Non-AMD/N0003.jpg") in found
    # the CSV's label decides, as in the original: N0001 is read from the AMD folder
    assert source.table["path"].tolist() == [
        "Training400/AMD/A0001.jpg",
        "Training400/AMD/A0002.jpg",
        "Training400/AMD/A0003.jpg",
        "Training400/AMD/N0001.jpg",
    ]


def test_amd_folder_disagreements_and_empty_class(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=2)
    (root / "amd_labels.csv").unlink()
    shutil.move(root / "Training400/Non-AMD/N0001.jpg", root / "Training400/AMD/N0001.jpg")
    shutil.move(root / "Training400/Non-AMD/N0002.jpg", root / "Training400/AMD/X0002.jpg")
    source = read_ichallenge_amd(root, LabelOptions())
    found = _kinds_and_files(source.problems)
    assert ("label-mismatch", "Training400/AMD/N0001.jpg") in found
    assert ("bad-name", "Training400/AMD/X0002.jpg") in found
    assert ("empty-class", "Training400/Non-AMD") in found
    assert source.table["label"].tolist() == [1, 1, 1, 1]


def test_amd_layout_errors_name_the_culprit(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=1)
    (root / "amd_labels.csv").write_text("imgName\nA0001\n")
    with pytest.raises(DatasetError, match=r"amd_labels\.csv.*at least 2 columns"):
        read_ichallenge_amd(root, LabelOptions())
    (root / "amd_labels.csv").unlink()
    (root / "Training400").rename(root / "inner")
    (root / "Training400").mkdir()
    (root / "inner").rename(root / "Training400" / "Training400")
    with pytest.raises(DatasetError, match=r"Training400/Training400.*too deep"):
        read_ichallenge_amd(root, LabelOptions())
    (root / "Training400" / "Training400").rename(root / "inner")
    (root / "Training400").rmdir()
    for folder in (root / "inner").iterdir():
        folder.rename(root / folder.name)
    with pytest.raises(DatasetError, match=r"AMD/ or Non-AMD/ directly"):
        read_ichallenge_amd(root, LabelOptions())
    with pytest.raises(DatasetError, match=r"Training400 not found.*datasets synth"):
        read_ichallenge_amd(tmp_path / "nothing", LabelOptions())


def test_amd_patient_split_has_every_image_on_one_side(tmp_path: Path) -> None:
    root = _synth(AMD, tmp_path, per_class=8)
    for seed in range(3):
        table = _manifest(AMD, root, seed=seed).table
        assert not table["path"].duplicated().any()
        assert set(table["split"]) == {"train", "val", "test"}


# --------------------------------------------------------------------------- PM


def test_pm_synthetic_tree_and_label_policies(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=2)
    files = sorted(p.name for p in (root / PALM).iterdir())
    assert files == ["H0001.jpg", "H0002.jpg", "N0001.jpg", "N0002.jpg", "P0001.jpg", "P0002.jpg"]
    default = _manifest(PM, root)
    assert default.class_names == ("non_pm", "pm")
    assert default.problems == ()
    assert default.params["label_policy"] == {"pm_positive": "P"}
    labels = dict(zip(default.table["path"].str[-9], default.table["label"], strict=False))
    assert default.table["label"].tolist() == [0, 0, 0, 0, 1, 1]  # H, H, N, N, P, P
    assert labels == {"H": 0, "N": 0, "P": 1}
    both = _manifest(PM, root, LabelOptions(pm_positive="HP"))
    assert both.table["label"].tolist() == [1, 1, 0, 0, 1, 1]
    assert both.params["label_policy"] == {"pm_positive": "HP"}
    assert both.hash != default.hash
    for path in default.absolute_paths():
        assert load_image(path).mode == "RGB"
    with pytest.raises(DatasetError, match=r"'PH'.*--pm-positive"):
        read_ichallenge_pm(root, LabelOptions(pm_positive="PH"))


def test_pm_class_signal(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=4, seed=1)
    manifest = _manifest(PM, root)
    means = pd.Series(_pale_share(manifest.absolute_paths())).groupby(manifest.labels).mean()
    assert means[1] > 2 * means[0]


def test_pm_unknown_prefix_is_dropped_with_a_problem(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=1)
    shutil.copy(root / PALM / "N0001.jpg", root / PALM / "X0001.jpg")
    source = read_ichallenge_pm(root, LabelOptions())
    assert _kinds_and_files(source.problems) == {("unknown-label", f"{PALM}/X0001.jpg")}
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


def test_pm_custom_csv_order_and_raw_label_checks(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=2)
    names = ["P0002.jpg", "N0001.jpg", "H0001.jpg", "P0001.jpg", "H0002.jpg", "N0002.jpg"]
    raw = {"N": 0, "H": 1, "P": 2}  # the natural encoding: the original's rule is P-only
    _palm_csv(root, names, [raw[n[0]] for n in names])
    manifest = _manifest(PM, root, split_policy="original")
    assert manifest.problems == ()
    assert manifest.table["path"].str[-9:].tolist() == names
    split = dict(zip(manifest.table["path"].str[-9:], manifest.table["split"], strict=True))
    assert split == _expected_original(names)
    # under HP the H rows disagree with the original's rule and the fix names the flag
    source = read_ichallenge_pm(root, LabelOptions(pm_positive="HP"))
    mismatch = [p for p in source.problems if p.kind == "label-mismatch"]
    assert [p.file for p in mismatch] == [
        "fovea_location_csv.csv row 4 (H0001.jpg)",
        "fovea_location_csv.csv row 6 (H0002.jpg)",
    ]
    assert all("--pm-positive P" in p.fix for p in mismatch)


def test_pm_csv_problems_name_rows_and_files(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=2)
    names = ["H0001.jpg", "N0001.jpg", "P0001.jpg", "H0002.jpg", "N0001.jpg", "Q0009.jpg"]
    _palm_csv(root, names, [2, 0, 2, 7, 0, 2])  # H encoded as 2 (the README's rule)
    source = read_ichallenge_pm(root, LabelOptions())
    found = _kinds_and_files(source.problems)
    assert ("label-mismatch", "fovea_location_csv.csv row 2 (H0001.jpg)") in found
    assert any("--pm-positive HP" in p.fix for p in source.problems if p.kind == "label-mismatch")
    assert ("unknown-label", "fovea_location_csv.csv row 5 (H0002.jpg)") in found
    assert ("duplicate", "fovea_location_csv.csv row 6 (N0001.jpg)") in found
    assert ("unknown-label", "fovea_location_csv.csv row 7 (Q0009.jpg)") in found
    assert ("unlisted", f"{PALM}/N0002.jpg") in found
    assert ("unlisted", f"{PALM}/P0002.jpg") in found
    assert source.table["path"].str[-9:].tolist() == names[:4]
    # rows kept keep the original's split of the full CSV
    expected = _expected_original([f"{i}" for i in range(6)])
    table = source.table
    assert table["original_split"].tolist() == [
        {"val": "train"}.get(expected[str(i)], expected[str(i)]) for i in range(4)
    ]


def test_pm_layout_errors_name_the_culprit(tmp_path: Path) -> None:
    root = _synth(PM, tmp_path, per_class=1)
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
    deep = _synth(PM, tmp_path / "deep", per_class=1)
    inner = deep / PALM / "PALM-Training400"
    inner.mkdir()
    for path in (deep / PALM).glob("*.jpg"):
        path.rename(inner / path.name)
    with pytest.raises(DatasetError, match=r"too deep"):
        read_ichallenge_pm(deep, LabelOptions())
