"""Shenzhen and Montgomery County tuberculosis chest X-ray sets (one layout, two datasets).

Published layout (the Kaggle "Pulmonary Chest X-Ray Abnormalities" export the original
study used; docs/original-study.md#dataset-shenzhencxr and #dataset-montgomerycxr)::

    <root>/shenzhen_metadata.csv                    study_id,sex,age,findings
    <root>/ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png
    <root>/montgomery_metadata.csv                  study_id,sex,age,findings
    <root>/MontgomerySet/CXR_png/MCUCXR_0001_0.png

Label rule of the original: ``findings == "normal"`` (exact) is class 0 (normal), anything
else class 1 (tuberculosis). The file name's last digit (``_0`` / ``_1``) encodes the same
label; a disagreement, or a near-miss spelling of "normal", is reported as a problem
(the original silently called ``"Normal "`` tuberculosis). Each image is its own patient:
the patient id is the file name without the label suffix (``CHNCXR_0001``).

The two sets share this one reader because their layouts differ only in names
(:class:`TbLayout`); each has its own spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable
from medtransfer.data.sources.layout import Clue, layout_error
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError

CLASS_NAMES = ("normal", "tuberculosis")
_SUFFIX = re.compile(r"^(?P<patient>.+)_(?P<digit>[01])\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class TbLayout:
    """Where one of the two sets keeps its index file and images; ``dataset``: catalog name."""

    dataset: str
    csv_name: str
    image_dir: str
    file_prefix: str
    wrong_csv_names: tuple[str, ...] = ()


SHENZHEN = TbLayout(
    "shenzhencxr",
    "shenzhen_metadata.csv",
    "ChinaSet_AllFiles/CXR_png",
    "CHNCXR",
    wrong_csv_names=("shenzhencxr_metadata.csv",),
)
MONTGOMERY = TbLayout("montgomerycxr", "montgomery_metadata.csv", "MontgomerySet/CXR_png", "MCUCXR")


def read_tb_layout(root: Path, layout: TbLayout) -> SourceTable:
    """Read ``root`` in the given layout; see the module docstring for the rules."""
    csv_path = root / layout.csv_name
    if not csv_path.is_file():
        raise layout_error(
            layout.dataset,
            csv_path,
            "the metadata CSV (columns study_id,sex,age,findings) of the published layout",
            *(
                Clue(
                    root / wrong if (root / wrong).is_file() else None,
                    "the original README used that name by mistake",
                    f"rename it to {layout.csv_name}",
                )
                for wrong in layout.wrong_csv_names
            ),
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
        description="138 frontal CXRs from Montgomery County, Maryland; normal vs TB.",
    ),
)
