"""Shenzhen and Montgomery County tuberculosis chest X-ray sets (one layout, two datasets).

Published layout (the Kaggle "Pulmonary Chest X-Ray Abnormalities" export the original
study used; spec/datasets-and-models.md §1.8–§1.9)::

    <root>/shenzhen_metadata.csv                    study_id,sex,age,findings
    <root>/ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png
    <root>/montgomery_metadata.csv                  study_id,sex,age,findings
    <root>/MontgomerySet/CXR_png/MCUCXR_0001_0.png

Label rule of the original: ``findings == "normal"`` (exact) is class 0 (normal), anything
else class 1 (tuberculosis). The file name's last digit (``_0`` / ``_1``) encodes the same
label; a disagreement, or a near-miss spelling of "normal", is reported as a problem
(the original silently called ``"Normal "`` tuberculosis). Each image is its own patient:
the patient id is the file name without the label suffix (``CHNCXR_0001``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.data.synthetic import (
    SynthOptions,
    chest_radiograph,
    write_16bit_png,
    write_palette_png,
)
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_text

CLASS_NAMES = ("normal", "tuberculosis")
_SUFFIX = re.compile(r"^(?P<patient>.+)_(?P<digit>[01])\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class TbLayout:
    """Where one of the two sets keeps its index file and images."""

    csv_name: str
    image_dir: str
    file_prefix: str
    wrong_csv_names: tuple[str, ...] = ()


SHENZHEN = TbLayout(
    "shenzhen_metadata.csv",
    "ChinaSet_AllFiles/CXR_png",
    "CHNCXR",
    wrong_csv_names=("shenzhencxr_metadata.csv",),
)
MONTGOMERY = TbLayout("montgomery_metadata.csv", "MontgomerySet/CXR_png", "MCUCXR")


def read_tb_layout(root: Path, layout: TbLayout) -> SourceTable:
    """Read ``root`` in the given layout; see the module docstring for the rules."""
    csv_path = root / layout.csv_name
    if not csv_path.is_file():
        hint = ""
        for wrong in layout.wrong_csv_names:
            if (root / wrong).is_file():
                hint = (
                    f" A file {wrong} exists: the original README used that name by mistake; "
                    f"rename it to {layout.csv_name}."
                )
        raise DatasetError(
            f"{csv_path} not found: expected the metadata CSV (columns study_id,sex,age,findings) "
            f"of the published layout.{hint} Run `medtransfer datasets synth` to see the layout."
        )
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < 4:
        raise DatasetError(
            f"{csv_path}: expected at least 4 columns (study_id,sex,age,findings), found "
            f"{list(frame.columns)}."
        )
    names = frame.iloc[:, 0].str.strip()
    findings = frame.iloc[:, 3]
    problems: list[Problem] = []
    labels = (findings != "normal").astype(int)
    for row, (name, finding) in enumerate(zip(names, findings, strict=True), start=2):
        where = f"{csv_path.name} row {row} ({name})"
        if finding != "normal" and finding.strip().lower() == "normal":
            problems.append(
                Problem(
                    "unknown-label",
                    where,
                    f"findings {finding!r} is not exactly 'normal', so the original's rule counts "
                    "it as tuberculosis",
                    "fix the spelling in the CSV if the image is normal",
                )
            )
        if finding.strip() == "":
            problems.append(
                Problem(
                    "unknown-label",
                    where,
                    "findings is empty; the original's rule counts it as tuberculosis",
                    "fill in the findings column",
                )
            )
        match = _SUFFIX.match(name)
        if match is None:
            problems.append(
                Problem(
                    "bad-name",
                    where,
                    f"file name does not end in _0.png or _1.png (expected like "
                    f"{layout.file_prefix}_0001_0.png)",
                )
            )
        elif int(match["digit"]) != int(finding != "normal"):
            problems.append(
                Problem(
                    "label-mismatch",
                    where,
                    f"file name says class {match['digit']} but findings {finding!r} says "
                    f"{int(finding != 'normal')}",
                    "check which of the two is right",
                )
            )
    patients = names.map(lambda n: m["patient"] if (m := _SUFFIX.match(n)) else Path(n).stem)
    table = pd.DataFrame(
        {"path": layout.image_dir + "/" + names, "label": labels, "patient": patients}
    )
    return SourceTable(table, problems)


def read_shenzhen(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Shenzhen CXR (662 images, 326 normal / 336 TB in the real release)."""
    return read_tb_layout(root, SHENZHEN)


def read_montgomery(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Montgomery County CXR (138 images, 80 normal / 58 TB in the real release)."""
    return read_tb_layout(root, MONTGOMERY)


def _synth_tb(root: Path, options: SynthOptions, layout: TbLayout, writer) -> None:
    rng = np.random.default_rng(options.seed)
    rows = []
    labels = [0] * options.per_class + [1] * options.per_class
    for number, label in enumerate(rng.permutation(labels), start=1):
        name = f"{layout.file_prefix}_{number:04d}_{label}.png"
        writer(chest_radiograph(rng, options.size, bool(label)), root / layout.image_dir / name)
        sex = rng.choice(["Male", "Female"])
        age = f"{int(rng.integers(18, 80)):03d}Y"
        findings = "normal" if label == 0 else rng.choice(["PTB in the right upper field", "STB"])
        rows.append({"study_id": name, "sex": sex, "age": age, "findings": findings})
    atomic_write_text(root / layout.csv_name, pd.DataFrame(rows).to_csv(index=False))


def synth_shenzhen(root: Path, options: SynthOptions) -> None:
    """Shenzhen layout with 8-bit palette ("P") PNGs, as the real files are."""
    _synth_tb(root, options, SHENZHEN, write_palette_png)


def synth_montgomery(root: Path, options: SynthOptions) -> None:
    """Montgomery layout with 16-bit PNGs holding 12-bit values."""
    _synth_tb(root, options, MONTGOMERY, write_16bit_png)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="shenzhencxr",
        source_url="https://www.kaggle.com/datasets/kmader/pulmonary-chest-xray-abnormalities",
        title="Shenzhen chest X-ray (tuberculosis)",
        aliases=("shenzhen", "shenzhen-cxr", "shenzhen_cxr"),
        folder="shenzhencxr",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="one image per patient (file name CHNCXR_NNNN)",
        few_shot_resize="square",
        read=read_shenzhen,
        synth=synth_shenzhen,
        description="662 frontal CXRs from Shenzhen No.3 People's Hospital; normal vs TB.",
    ),
    DatasetSpec(
        name="montgomerycxr",
        source_url="https://www.kaggle.com/datasets/kmader/pulmonary-chest-xray-abnormalities",
        title="Montgomery County chest X-ray (tuberculosis)",
        aliases=("montgomery", "montgomery-cxr", "montgomery_cxr"),
        folder="montgomerycxr",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="one image per patient (file name MCUCXR_NNNN)",
        few_shot_resize="square",
        read=read_montgomery,
        synth=synth_montgomery,
        description="138 frontal CXRs from Montgomery County, Maryland; normal vs TB.",
    ),
)
