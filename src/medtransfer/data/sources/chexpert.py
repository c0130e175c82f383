"""CheXpert (Stanford ML Group), read many-to-one: Pleural Effusion present or not.

Published layout (docs/original-study.md#dataset-chexpert)::

    <root>/train.csv     Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices
    <root>/CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg
    <root>/CheXpert-v1.0/train/patient00001/study1/view2_lateral.jpg
    ...

(``CheXpert-v1.0-small/...`` for the downsampled release). ``Path`` is relative to
``<root>``. The official archive ships ``train.csv`` inside ``CheXpert-v1.0*/``; when
``<root>/train.csv`` is absent and exactly one ``<root>/CheXpert-v1.0*/train.csv`` exists,
that one is read (its paths are relative to ``<root>`` too). ``valid.csv`` is never read,
as in the original. Columns are found by name (``Path``, ``Pleural Effusion``).

Label rule: only ``Pleural Effusion`` counts; every other pathology is ignored. ``1.0`` is
class 1 (``effusion``), ``0.0`` and blank are class 0 (``no_effusion``), the uncertain
``-1.0`` follows ``LabelOptions.uncertain``: ``positive`` → 1 (U-Ones, the original's
few-shot), ``negative`` → 0 (U-Zeros, what its linear and fine-tune runs did in effect,
docs/original-study.md#defect-d13), ``ignore`` → the row is dropped. Any other value is a
problem and its row is dropped. The patient is the ``patientNNNNN`` folder of the path.

Original split: ``sample(frac=1, random_state=42)`` over all ``train.csv`` rows (before
any row is dropped), shuffled rows ``[:134049]`` train, the rest test. A ``train.csv`` of at
most 134,049 rows cannot be cut that way: every row is then marked ``train`` (see
:func:`original_split_possible`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    UNCERTAIN_POLICIES,
    LabelOptions,
    Problem,
    SourceTable,
    ViewPairs,
    original_columns,
    renumber_original_order,
)
from medtransfer.data.sources.layout import (
    TOO_DEEP,
    TOO_SHALLOW,
    Clue,
    layout_error,
    one_level_too_deep,
)
from medtransfer.data.sources.problems import listed_again, row_problems
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import ConfigError, DatasetError

#: The original's fixed train cut: shuffled rows [:134049] train, the rest test.
CHEXPERT_TRAIN_ROWS = 134049
CSV_NAME = "train.csv"
PATH_COLUMN = "Path"
TARGET_COLUMN = "Pleural Effusion"
#: The official train.csv header, in order.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
LABEL_COLUMNS = CHEXPERT_COLUMNS[5:]
IMAGE_FOLDERS = ("CheXpert-v1.0", "CheXpert-v1.0-small")
CLASS_NAMES = ("no_effusion", "effusion")
_SAMPLE_ROWS = 20
_PATIENT = r"(?:^|/)(patient\d+)(?:/|$)"
DATASET = "chexpert"


def original_split_possible(n_rows: int) -> bool:
    """Whether a ``train.csv`` of ``n_rows`` data rows leaves rows after the 134,049 cut."""
    return n_rows > CHEXPERT_TRAIN_ROWS


def original_split_error(n_rows: int) -> str:
    """The message for a ``train.csv`` too small for the original's split."""
    return (
        f"train.csv has {n_rows} rows; the original's cut at row {CHEXPERT_TRAIN_ROWS} needs "
        "more; use --split-policy patient"
    )


def check_original_split(root: Path) -> None:
    """Raise a DatasetError when ``train.csv`` is too small for the original's cut."""
    n_rows = count_csv_rows(root)
    if not original_split_possible(n_rows):
        raise DatasetError(original_split_error(n_rows) + ".")


def find_train_csv(root: Path) -> Path:
    """``<root>/train.csv``, else the one ``<root>/CheXpert-v1.0*/train.csv`` the archive ships."""
    direct = root / CSV_NAME
    if direct.is_file():
        return direct
    shipped = [root / folder / CSV_NAME for folder in IMAGE_FOLDERS]
    found = [path for path in shipped if path.is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(
            f"{direct} not found and several candidates exist ({', '.join(map(str, found))}); "
            f"copy the one whose images you have to {direct}."
        )
    valid = root / "valid.csv"
    raise layout_error(
        DATASET,
        direct,
        f"CheXpert's train.csv (header {','.join(CHEXPERT_COLUMNS[:6])},...) with its Path "
        f"column relative to {root}, the image tree at {root}/CheXpert-v1.0/train/...",
        Clue(
            valid if valid.exists() else None,
            "the original reads train.csv only, never valid.csv",
            f"put train.csv beside it in {root}",
        ),
    )


def count_csv_rows(root: Path) -> int:
    """Data rows of the ``train.csv`` read for ``root`` (for :func:`original_split_possible`)."""
    return len(pd.read_csv(find_train_csv(root), usecols=[0], dtype=str))


def read_index(csv_path: Path) -> pd.DataFrame:
    """The ``Path`` and ``Pleural Effusion`` columns, by name, as str (NaN where blank), (N, 2).

    Returned columns are ``path`` and ``target``; rows in file order.
    """
    try:
        header = pd.read_csv(csv_path, nrows=0)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{csv_path} is empty: expected CheXpert's train.csv.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    by_name = {str(column).strip(): column for column in header.columns}
    missing = [c for c in (PATH_COLUMN, TARGET_COLUMN) if c not in by_name]
    if missing:
        found = list(by_name)
        shown = ", ".join(found[:20]) + (", ..." if len(found) > 20 else "")
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; found {shown}. "
            f"Expected the official header {','.join(CHEXPERT_COLUMNS)}."
        )
    wanted = [by_name[PATH_COLUMN], by_name[TARGET_COLUMN]]
    try:
        frame = pd.read_csv(csv_path, usecols=wanted, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    return pd.DataFrame({"path": frame[wanted[0]], "target": frame[wanted[1]]})


def parse_target(values: pd.Series) -> np.ndarray:
    """Raw ``Pleural Effusion`` strings (N,) → float codes (N,): 1, 0 (blank too), -1, NaN.

    NaN marks a value that is none of those (an unknown label).
    """
    text = values.fillna("").astype(str).str.strip()
    numbers = pd.to_numeric(text.mask(text == "", "0"), errors="coerce")
    return numbers.where(numbers.isin([1.0, 0.0, -1.0])).to_numpy(dtype=np.float64)


def policy_labels(codes: np.ndarray, uncertain: str) -> np.ndarray:
    """Codes (N,) from :func:`parse_target` → int labels (N,), -1 where the row is dropped."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ConfigError(
            f"Unknown uncertain-label policy {uncertain!r}; choose one of "
            f"{', '.join(UNCERTAIN_POLICIES)}."
        )
    labels = np.full(codes.shape, -1, dtype=np.int64)
    labels[codes == 1] = 1
    labels[codes == 0] = 0
    if uncertain != "ignore":
        labels[codes == -1] = 1 if uncertain == "positive" else 0
    return labels


def _missing_folder_error(root: Path, top: str, example: str) -> DatasetError:
    """The error for a missing top folder ``top`` of train.csv's paths (e.g. ``example``)."""
    expected = root / top
    rest = example.split("/", 1)[1] if "/" in example else ""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    others = [p for p in subfolders if p.name.startswith("CheXpert") and p.name != top]
    shallow = root / rest.split("/", 1)[0] if rest else None
    return layout_error(
        DATASET,
        expected,
        f"the image tree of train.csv's paths (e.g. {example}), which are relative to "
        f"{root}: download CheXpert and place its image tree there",
        Clue(
            others[0] if others else None,
            f"it is another release than the one train.csv lists ({top}/)",
            "use the train.csv that came with the images you have (its Path column starts "
            "with that folder's name)",
        ),
        Clue(
            shallow if shallow is not None and shallow.is_dir() else None,
            TOO_SHALLOW,
            f"move it into {expected}/ so that {root / example} exists",
        ),
        one_level_too_deep(root, top),
    )


def check_image_tree(root: Path, paths: pd.Series) -> None:
    """Raise :class:`DatasetError` if the image tree is missing or nested wrongly.

    Only folders and up to 20 sample files are looked at; no image is opened. ``paths``: (N,)
    posix paths relative to ``root``, "" for rows without one.
    """
    listed = paths[paths != ""]
    if listed.empty:
        return
    tops = listed.str.partition("/")[0]
    for top in sorted(tops.unique()):
        if not (root / top).is_dir():
            raise _missing_folder_error(root, top, listed[tops == top].iloc[0])
    sample = listed.iloc[:_SAMPLE_ROWS]
    if any((root / path).is_file() for path in sample):
        return
    example = sample.iloc[0]
    top, _, rest = example.partition("/")
    doubled = root / top / top / rest
    if rest and doubled.is_file():
        raise layout_error(
            DATASET,
            root / example,
            "the images at train.csv's paths",
            Clue(
                doubled,
                f"{TOO_DEEP} (unpacked into a folder of the same name)",
                f"move the contents of {root / top / top} up into {root / top}",
            ),
        )
    second = rest.partition("/")[0]
    if second and not (root / top / second).is_dir():
        raise layout_error(
            DATASET, root / top / second, f"it, as train.csv's paths (e.g. {example}) say"
        )


def read_chexpert(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of CheXpert's ``train.csv``; see the module docstring for the rules."""
    labels = labels or LabelOptions()
    csv_path = find_train_csv(root)
    csv_name = csv_path.relative_to(root).as_posix()
    index = read_index(csv_path)
    paths = index["path"].fillna("").astype(str).str.strip().str.replace("\\", "/", regex=False)
    raw = index["target"]
    codes = parse_target(raw)
    label = policy_labels(codes, labels.uncertain)
    problems: list[Problem] = []
    no_path = (paths == "").to_numpy()
    problems += row_problems(
        "missing-file", csv_name, np.flatnonzero(no_path), lambda _: "Path is empty; row skipped"
    )
    unknown = np.isnan(codes) & ~no_path
    problems += row_problems(
        "unknown-label",
        csv_name,
        np.flatnonzero(unknown),
        lambda r: f"{TARGET_COLUMN} is {raw.iloc[r]!r}, not 1.0, 0.0, -1.0 or blank; row skipped",
        "fix the value in train.csv",
    )
    repeated = (paths.duplicated(keep="first") & ~pd.Series(no_path)).to_numpy()
    problems += listed_again(csv_name, paths, repeated)
    patients = paths.str.extract(_PATIENT, expand=False).fillna("")
    problems += row_problems(
        "bad-name",
        csv_name,
        np.flatnonzero((patients == "").to_numpy() & ~no_path),
        lambda r: f"{paths.iloc[r]} has no patientNNNNN folder; the image is its own patient",
    )
    table = pd.DataFrame(
        {
            "path": paths,
            "label": label,
            "patient": patients,
            **original_columns(len(paths), n_train=CHEXPERT_TRAIN_ROWS),
        }
    )
    table = table.loc[(label >= 0) & ~no_path]
    check_image_tree(root, table["path"])
    table = renumber_original_order(table)
    problems += _empty_classes(table["label"], csv_name, labels.uncertain)
    return SourceTable(table.reset_index(drop=True), problems)


def _empty_classes(label: pd.Series, csv_name: str, uncertain: str) -> list[Problem]:
    counts = label.value_counts()
    return [
        Problem(
            "empty-class",
            csv_name,
            f"no image of class {name!r} (uncertain={uncertain})",
            "check the Pleural Effusion column or the uncertain-label policy",
        )
        for index, name in enumerate(CLASS_NAMES)
        if counts.get(index, 0) == 0
    ]


#: The frontal view the original paired every lateral image with.
FIRST_FRONTAL = "view1_frontal.jpg"


def lateral_frontal_pairs(table: pd.DataFrame) -> ViewPairs:
    """Each lateral image of ``table`` (manifest rows, column ``path``) with a frontal image of
    the same study: the study's ``view1_frontal.jpg`` when listed (the original's choice),
    else its first frontal image by name. The view is read from the file name
    (``view<N>_frontal.jpg`` / ``view<N>_lateral.jpg``); the study is the file's folder.

    A lateral image whose study lists no frontal image is counted under
    ``"lateral without a frontal image in its study"`` and skipped (the original crashed on
    it, docs/original-study.md#defect-e44).
    """
    paths = table["path"].astype(str)
    folder, _, name = paths.str.rpartition("/").T.to_numpy()
    lowered = np.char.lower(name.astype(str))
    lateral = np.char.find(lowered, "lateral") >= 0
    frontal = (np.char.find(lowered, "frontal") >= 0) & ~lateral
    frontals = pd.DataFrame({"folder": folder[frontal], "name": name[frontal]})
    frontals["row"] = np.flatnonzero(frontal)
    frontals["rank"] = frontals["name"] != FIRST_FRONTAL
    partner = frontals.sort_values(["rank", "name"]).drop_duplicates("folder").set_index("folder")
    laterals = np.flatnonzero(lateral)
    matched = partner["row"].reindex(folder[laterals])
    found = matched.notna().to_numpy()
    unpaired = {"lateral without a frontal image in its study": int((~found).sum())}
    return ViewPairs(
        laterals[found].astype(np.int64),
        matched.to_numpy()[found].astype(np.int64),
        ("lateral", "frontal"),
        {k: v for k, v in unpaired.items() if v},
    )


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="chexpert",
        source_url="https://stanfordmlgroup.github.io/competitions/chexpert/",
        title="CheXpert (Pleural Effusion)",
        aliases=("chexpert-pe", "chexpert_pe", "chexpert-v1.0", "chexpert-small"),
        folder="chexpert",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="patientNNNNN folder in train.csv's Path",
        few_shot_resize="shorter",
        read=read_chexpert,
        label_options=("uncertain",),
        check_original=check_original_split,
        view_pairs=lateral_frontal_pairs,
        description=(
            "223,414 chest radiographs (frontal and lateral) of 64,540 Stanford patients; "
            "Pleural Effusion absent vs present, uncertain labels per --uncertain."
        ),
    ),
)
