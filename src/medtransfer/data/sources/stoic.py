"""STOIC 2021 chest CT (COVID-19): 3-D CT volumes turned into one 2-D axial slice each.

Published layout (the STOIC 2021 training release; docs/original-study.md#dataset-stoic)::

    <root>/metadata/reference.csv        PatientID,probCOVID,probSevere
    <root>/data/mha/<PatientID>.mha      one 3-D CT volume (Hounsfield units) per patient

Label rule of the original: ``probCOVID`` (0/1) is the class: 0 ``covid_negative``,
1 ``covid_positive``; ``probSevere`` is ignored. A value other than 0 or 1 is reported as
a problem and its row left out. The patient id is ``PatientID`` (one volume per patient).
The original's split is the generic one (``sample(frac=1, random_state=42)``, first 80 %
train: 1600 / 400); it is computed over every CSV row, before any row is left out.

Each item is decoded by :func:`load_stoic`: the axial slice ``z = floor(0.5 * Z)`` of the
volume, HU windowed to [-1000, 250], scaled to 8 bits with truncation as the original did,
shown the way a radiologist expects (rows run anterior to posterior, the patient's right on
the image's left) and replicated to RGB. Only that slice is read from disk where the file
allows it (see :func:`read_middle_slice`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, original_columns
from medtransfer.data.sources.layout import (
    TOO_SHALLOW,
    Clue,
    layout_error,
    one_level_too_deep,
    synth_hint,
)
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError, ImageDecodeError, without_path

CLASS_NAMES = ("covid_negative", "covid_positive")
CSV_NAME = "metadata/reference.csv"
VOLUME_DIR = "data/mha"
CSV_COLUMNS = ("PatientID", "probCOVID", "probSevere")
HU_WINDOW = (-1000.0, 250.0)
ORIENTATIONS = ("radiological", "original")
DATASET = "stoic"


# ----------------------------------------------------------------------------- reading


def _layout_error(root: Path) -> DatasetError:
    """The error for a missing ``metadata/reference.csv``, with a hint at the likely nesting."""
    flat = root / "reference.csv"
    return layout_error(
        DATASET,
        root / CSV_NAME,
        f"the STOIC 2021 index CSV (columns {','.join(CSV_COLUMNS)})",
        Clue(
            flat if flat.is_file() else None,
            TOO_SHALLOW,
            f"move it to {root / CSV_NAME} (and the volumes to {root / VOLUME_DIR})",
        ),
        one_level_too_deep(root, CSV_NAME),
    )


def _check_volume_folder(root: Path) -> None:
    """Raise a :class:`DatasetError` unless ``<root>/data/mha`` is a folder."""
    folder = root / VOLUME_DIR
    if folder.is_dir():
        return
    raise layout_error(
        DATASET,
        folder,
        f"the CT volumes as {folder}/<PatientID>.mha",
        *(
            Clue(
                wrong if wrong.is_dir() and any(wrong.glob("*.mha")) else None,
                "the volumes are in the wrong folder",
                f"move them to {folder}",
            )
            for wrong in (root / "mha", root / "data")
        ),
    )


def _read_reference(csv_path: Path) -> pd.DataFrame:
    """The index CSV as strings, with its required columns checked."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in CSV_COLUMNS[:2] if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {missing}; found {list(frame.columns)}. The STOIC "
            f"index has the header {','.join(CSV_COLUMNS)}. {synth_hint(DATASET)}"
        )
    return frame


def _label_problems(
    csv_name: str, ids: pd.Series, raw: pd.Series, valid: np.ndarray
) -> list[Problem]:
    """One ``unknown-label`` problem per row whose probCOVID is not 0 or 1."""
    return [
        Problem(
            "unknown-label",
            f"{csv_name} row {row + 2} (PatientID {ids.iloc[row]})",
            f"probCOVID is {raw.iloc[row]!r}, expected 0 or 1; the row is left out",
            "fix the value in the CSV",
        )
        for row in np.flatnonzero(~valid)
    ]


def _duplicate_problems(csv_name: str, ids: pd.Series) -> list[Problem]:
    """One ``duplicate`` problem per repeated PatientID (each names its rows)."""
    repeated = ids[ids.duplicated(keep=False) & (ids != "")]
    problems = []
    for patient, rows in repeated.groupby(repeated, sort=False).groups.items():
        listed = ", ".join(str(int(r) + 2) for r in rows)
        problems.append(
            Problem(
                "duplicate",
                f"{csv_name} rows {listed} (PatientID {patient})",
                f"PatientID {patient} is listed {len(rows)} times; they all read the same volume",
                "keep one row per patient",
            )
        )
    return problems


def read_stoic(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of ``<root>/metadata/reference.csv`` in file order; opens no volume.

    Returns a table with ``path`` (``data/mha/<PatientID>.mha``), ``label`` (probCOVID),
    ``patient`` (PatientID) and the original's generic split over all CSV rows.
    """
    csv_path = root / CSV_NAME
    if not csv_path.is_file():
        raise _layout_error(root)
    _check_volume_folder(root)
    frame = _read_reference(csv_path)
    ids = frame["PatientID"].str.strip()
    raw = frame["probCOVID"].str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    valid = np.isin(values, (0.0, 1.0)) & (ids != "").to_numpy()
    problems = _label_problems(CSV_NAME, ids, raw, valid)
    problems.extend(_duplicate_problems(CSV_NAME, ids))
    table = pd.DataFrame(
        {
            "path": VOLUME_DIR + "/" + ids + ".mha",
            "label": np.nan_to_num(values).astype(np.int64),
            "patient": ids,
            **original_columns(len(frame)),
        }
    )[valid]
    for label, name in enumerate(CLASS_NAMES):
        if not (table["label"] == label).any():
            problems.append(
                Problem(
                    "empty-class",
                    CSV_NAME,
                    f"no row has probCOVID {label} ({name})",
                    "check that the CSV is the full STOIC reference file",
                )
            )
    return SourceTable(table, problems)


# ----------------------------------------------------------------------------- decoding


def _open_reader(path: Path) -> sitk.ImageFileReader:
    """An ``ImageFileReader`` with the header of ``path`` read; errors name the file."""
    if not path.is_file():
        raise ImageDecodeError.of(
            path, "CT volume not found", "restore it, or remove its row from reference.csv"
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageDecodeError.of(
            path,
            f"cannot be read as a CT volume ({without_path(_first_line(exc), path)})",
            "re-download it",
        ) from exc
    if reader.GetDimension() != 3:
        raise ImageDecodeError.of(
            path, f"is a {reader.GetDimension()}-D image; expected a 3-D CT volume (x, y, z)"
        )
    if reader.GetNumberOfComponents() != 1:
        raise ImageDecodeError.of(
            path,
            f"has {reader.GetNumberOfComponents()} components per voxel; expected one "
            "(Hounsfield units)",
        )
    return reader


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def read_middle_slice(path: Path) -> sitk.Image:
    """The axial slice ``z = floor(0.5 * Z)`` of a volume, as a 3-D image of size (X, Y, 1).

    Only the header and that slice are read (SimpleITK's streaming ``SetExtractIndex`` /
    ``SetExtractSize``): an uncompressed .mha is read a slice's worth of bytes instead of
    the whole volume; a compressed one is inflated only up to the slice.

    Raises:
        ImageDecodeError: missing, corrupt or truncated file; not 3-D; not one component.
    """
    reader = _open_reader(path)
    size_x, size_y, size_z = reader.GetSize()
    if min(size_x, size_y, size_z) < 1:
        raise ImageDecodeError.of(path, f"empty volume of size {reader.GetSize()}")
    reader.SetExtractIndex([0, 0, size_z // 2])
    reader.SetExtractSize([size_x, size_y, 1])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageDecodeError.of(
            path,
            f"the volume's voxel data cannot be read ({without_path(_first_line(exc), path)}); "
            "the file is "
            "truncated or corrupt",
            "re-download it",
        ) from exc


def window_to_uint8(hu: np.ndarray) -> np.ndarray:
    """The original's windowing: (H, W) HU -> (H, W) uint8.

    Clip to [-1000, 250], scale ``(v + 1000) / 1250`` to [0, 1] in float64, then
    ``(v * 255).astype(uint8)`` (truncation, not rounding). NaN counts as air (-1000).
    """
    low, high = HU_WINDOW
    values = np.nan_to_num(np.asarray(hu, dtype=np.float64), nan=low)
    scaled = (np.clip(values, low, high) - low) / (high - low)
    return (scaled * 255).astype(np.uint8)


def stoic_slice(path: Path, orientation: str = "radiological") -> np.ndarray:
    """The middle axial slice of ``path`` windowed to 8 bits, (H, W) uint8.

    ``orientation="radiological"`` (default): the slice reoriented to LPS (for the usual
    identity direction this is the stored (y, x) grid): rows run from anterior (top) to
    posterior, columns from the patient's right (left of the image) to their left.
    ``orientation="original"``: what the original code produced (medpy's (x, y, z) array
    sliced as ``vol[:, :, z]``), i.e. the stored slice transposed, rows = x
    (docs/original-study.md#defect-d27).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    image = read_middle_slice(Path(path))
    if orientation == "radiological":
        image = sitk.DICOMOrient(image, "LPS")
        array = np.squeeze(sitk.GetArrayFromImage(image))  # (z=1, y, x) -> (y, x)
    else:
        array = sitk.GetArrayFromImage(image)[0].T  # (y, x) -> (x, y), as medpy gave it
    if array.ndim != 2:
        raise ImageDecodeError(f"{path}: the middle slice has shape {array.shape}, not 2-D.")
    return window_to_uint8(array)


def load_stoic(path: Path) -> Image.Image:
    """Decode one STOIC volume to its middle axial slice, 8-bit RGB (W = X, H = Y).

    Raises:
        ImageDecodeError: naming the file (missing, corrupt, not a 3-D volume).
    """
    return Image.fromarray(stoic_slice(Path(path))).convert("RGB")


def load_stoic_original(path: Path) -> Image.Image:
    """As :func:`load_stoic` but in the original's transposed orientation (W = Y, H = X)."""
    return Image.fromarray(stoic_slice(Path(path), "original")).convert("RGB")


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="stoic",
        source_url="https://registry.opendata.aws/stoic2021-training/",
        title="STOIC 2021 chest CT (COVID-19)",
        aliases=("stoic2021", "stoic-2021", "stoic_2021"),
        folder="stoic",
        class_names=CLASS_NAMES,
        metric=MEAN_PER_CLASS_ACCURACY,
        patients="PatientID in metadata/reference.csv (one CT volume per patient)",
        few_shot_resize="shorter",
        read=read_stoic,
        load=load_stoic,
        description=(
            "2,000 chest CTs from the STOIC 2021 challenge (French multicentre); COVID-19 "
            "negative vs positive, from each volume's middle axial slice."
        ),
    ),
)
