"""CheXpert (Stanford ML Group), read many-to-one: Pleural Effusion present or not.

Published layout (spec/datasets-and-models.md §1.3)::

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
spec §6 #13), ``ignore`` → the row is dropped. Any other value is a problem and its row is
dropped. The patient is the ``patientNNNNN`` folder of the path.

Original split: ``sample(frac=1, random_state=42)`` over all ``train.csv`` rows (before
any row is dropped), shuffled rows ``[:134049]`` train, the rest test. A ``train.csv`` of at
most 134,049 rows cannot be cut that way: every row is then marked ``train`` (see
:func:`original_split_possible`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    UNCERTAIN_POLICIES,
    LabelOptions,
    Problem,
    SourceTable,
    generic_original,
)
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions, chest_radiograph, write_image
from medtransfer.errors import ConfigError, DatasetError
from medtransfer.fsutil import atomic_write_text

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
#: Problems listed one by one per kind before a single "and N more" summary.
PROBLEM_LIMIT = 20
_SAMPLE_ROWS = 20
_PATIENT = r"(?:^|/)(patient\d+)(?:/|$)"
_SYNTH_HINT = "Run `medtransfer datasets synth --dataset chexpert --out DIR` to see the layout."


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
    hint = ""
    if (root / "valid.csv").exists():
        hint = " (valid.csv is there, but the original reads train.csv only)"
    raise DatasetError(
        f"{direct} not found: expected CheXpert's train.csv (header "
        f"{','.join(CHEXPERT_COLUMNS[:6])},...) with its Path column relative to {root}, the "
        f"image tree at {root}/CheXpert-v1.0/train/...{hint}. "
        f"{_SYNTH_HINT}"
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


def row_problems(
    kind: str, file: str, rows: np.ndarray, detail: Callable[[int], str], fix: str = ""
) -> list[Problem]:
    """One problem per offending row (0-based data rows, (k,)), capped, then one summary.

    The CSV row number in ``file row N`` counts the header as row 1.
    """
    problems = [
        Problem(kind, f"{file} row {int(row) + 2}", detail(int(row)), fix)
        for row in rows[:PROBLEM_LIMIT]
    ]
    if len(rows) > PROBLEM_LIMIT:
        problems.append(
            Problem(kind, file, f"... and {len(rows) - PROBLEM_LIMIT} more rows like these", fix)
        )
    return problems


def _missing_folder_message(root: Path, top: str, example: str) -> str:
    expected = root / top
    rest = example.split("/", 1)[1] if "/" in example else ""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    others = [p.name for p in subfolders if p.name.startswith("CheXpert") and p.name != top]
    if others:
        return (
            f"train.csv lists images under {top}/ but {root} holds {', '.join(others)}/: use "
            "the train.csv that came with the images you have (its Path column starts with "
            "that folder's name)."
        )
    if rest and (root / rest.split("/", 1)[0]).is_dir():
        return (
            f"{expected} not found, but {root / rest.split('/', 1)[0]} exists: the image tree is "
            f"one level too shallow; move it into {expected}/ so that {root / example} exists."
        )
    deeper = [p / top for p in subfolders if (p / top).is_dir()]
    if deeper:
        return (
            f"{expected} not found, but {deeper[0]} exists: the image tree is one level too "
            f"deep; move it up to {expected}. {_SYNTH_HINT}"
        )
    return (
        f"image folder {expected} not found: train.csv's paths (e.g. {example}) are relative to "
        f"{root}. Download CheXpert and place its image tree there. {_SYNTH_HINT}"
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
            example = listed[tops == top].iloc[0]
            raise DatasetError(_missing_folder_message(root, top, example))
    sample = listed.iloc[:_SAMPLE_ROWS]
    if any((root / path).is_file() for path in sample):
        return
    example = sample.iloc[0]
    top, _, rest = example.partition("/")
    if rest and (root / top / top / rest).is_file():
        raise DatasetError(
            f"{root / example} not found, but {root / top / top / rest} exists: the image tree "
            f"is one level too deep (unpacked into a folder of the same name); move "
            f"{root / top / top}'s contents up to {root / top}."
        )
    second = rest.partition("/")[0]
    if second and not (root / top / second).is_dir():
        raise DatasetError(
            f"{root / top / second} not found: train.csv's paths (e.g. {example}) expect it. "
            f"{_SYNTH_HINT}"
        )


def _original_columns(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Split name and shuffled position per CSV row, both (n_rows,): the 134,049 cut."""
    return generic_original(n_rows, n_train=CHEXPERT_TRAIN_ROWS)


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
    duplicated = (paths.duplicated(keep="first") & ~pd.Series(no_path)).to_numpy()
    if duplicated.any():
        firsts = paths.drop_duplicates(keep="first")
        first_row = pd.Series(firsts.index.to_numpy(), index=firsts.to_numpy())
        problems += row_problems(
            "duplicate",
            csv_name,
            np.flatnonzero(duplicated),
            lambda r: (
                f"{paths.iloc[r]} is listed again (first at row {first_row[paths.iloc[r]] + 2})"
            ),
            "remove the repeated row",
        )
    patients = paths.str.extract(_PATIENT, expand=False).fillna("")
    problems += row_problems(
        "bad-name",
        csv_name,
        np.flatnonzero((patients == "").to_numpy() & ~no_path),
        lambda r: f"{paths.iloc[r]} has no patientNNNNN folder; the image is its own patient",
    )
    split, position = _original_columns(len(paths))
    table = pd.DataFrame(
        {
            "path": paths,
            "label": label,
            "patient": patients,
            "original_split": split,
            "position": position,
        }
    )
    table = table.loc[(label >= 0) & ~no_path].copy()
    check_image_tree(root, table["path"])
    rank = table.groupby("original_split")["position"].rank(method="first")
    table["original_order"] = rank.astype(np.int64) - 1
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


# --- synthetic tree --------------------------------------------------------------------------


def _plan_studies(rng: np.random.Generator, per_class: int) -> list[tuple[str, int]]:
    """(Pleural Effusion value, number of views) per study, ``per_class`` images per class.

    Class 1 mixes ``1.0`` with uncertain ``-1.0`` (U-Ones counts both as positive); class 0
    mixes ``0.0`` with blanks. The first two studies of each class are single-view, one of
    each value, so both values occur whenever ``per_class >= 2``.
    """
    studies: list[tuple[str, int]] = []
    for values in (("0.0", ""), ("1.0", "-1.0")):
        remaining, number = per_class, 0
        while remaining > 0:
            views = 1 if number < 2 or remaining == 1 else int(rng.random() < 0.4) + 1
            value = values[number] if number < 2 else values[int(rng.random() < 0.35)]
            studies.append((value, views))
            remaining -= views
            number += 1
    return studies


def _other_labels(rng: np.random.Generator, effusion: str) -> dict[str, str]:
    """Plausible values for the label columns other than Pleural Effusion, one study."""
    values = {
        column: str(rng.choice(["", "1.0", "0.0", "-1.0"], p=[0.72, 0.12, 0.11, 0.05]))
        for column in LABEL_COLUMNS
        if column not in ("No Finding", TARGET_COLUMN)
    }
    values[TARGET_COLUMN] = effusion
    positive = any(v in ("1.0", "-1.0") for v in values.values())
    values["No Finding"] = "" if positive else "1.0"
    return values


def synth_chexpert(root: Path, options: SynthOptions) -> None:
    """CheXpert layout: train.csv with the official header, 8-bit grayscale JPEGs.

    Patients hold 1-3 studies each; a study is a frontal view, sometimes with a lateral one
    sharing its labels. Pleural Effusion is planted with ``chest_radiograph(abnormal=...)``
    for ``1.0`` and ``-1.0``.
    """
    rng = np.random.default_rng(options.seed)
    studies = _plan_studies(rng, options.per_class)
    order = rng.permutation(len(studies))
    rows: list[dict[str, object]] = []
    patient, left = 0, 0
    for position in order:
        if left == 0:
            patient, left, study = patient + 1, int(rng.integers(1, 4)), 0
            sex, age = str(rng.choice(["Male", "Female"])), int(rng.integers(18, 91))
        study, left = study + 1, left - 1
        effusion, views = studies[position]
        labels = _other_labels(rng, effusion)
        folder = f"CheXpert-v1.0/train/patient{patient:05d}/study{study}"
        for view in range(views):
            name = "view1_frontal.jpg" if view == 0 else "view2_lateral.jpg"
            image = chest_radiograph(rng, options.size, effusion in ("1.0", "-1.0"))
            write_image(image, root / folder / name)
            rows.append(
                {
                    "Path": f"{folder}/{name}",
                    "Sex": sex,
                    "Age": age,
                    "Frontal/Lateral": "Frontal" if view == 0 else "Lateral",
                    "AP/PA": str(rng.choice(["AP", "PA"])) if view == 0 else "",
                    **labels,
                }
            )
    frame = pd.DataFrame(rows, columns=list(CHEXPERT_COLUMNS))
    atomic_write_text(root / CSV_NAME, frame.to_csv(index=False))


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
        synth=synth_chexpert,
        label_options=("uncertain",),
        check_original=check_original_split,
        description=(
            "223,414 chest radiographs (frontal and lateral) of 64,540 Stanford patients; "
            "Pleural Effusion absent vs present, uncertain labels per --uncertain."
        ),
    ),
)
