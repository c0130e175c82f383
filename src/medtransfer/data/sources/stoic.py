"""STOIC 2021 chest CT (COVID-19): 3-D CT volumes turned into one 2-D axial slice each.

Published layout (the STOIC 2021 training release; spec/datasets-and-models.md §1.10)::

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

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, generic_original
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions
from medtransfer.errors import DatasetError, ImageDecodeError
from medtransfer.fsutil import atomic_write_text

CLASS_NAMES = ("covid_negative", "covid_positive")
CSV_NAME = "metadata/reference.csv"
VOLUME_DIR = "data/mha"
CSV_COLUMNS = ("PatientID", "probCOVID", "probSevere")
HU_WINDOW = (-1000.0, 250.0)
ORIENTATIONS = ("radiological", "original")
_SYNTH_DEPTH = 16
_SYNTH_HINT = "Run `medtransfer datasets synth --dataset stoic --out DIR` to see the layout."


# ----------------------------------------------------------------------------- reading


def _layout_error(root: Path) -> DatasetError:
    """The error for a missing ``metadata/reference.csv``, with a hint at the likely nesting."""
    expected = root / CSV_NAME
    hint = ""
    if (root / "reference.csv").is_file():
        hint = (
            f" {root / 'reference.csv'} exists: the folder is one level too shallow; move it "
            f"to {expected} (and the volumes to {root / VOLUME_DIR})."
        )
    else:
        deeper = sorted(p for p in root.glob(f"*/{CSV_NAME}") if p.is_file())
        if deeper:
            inner = deeper[0].parent.parent
            hint = (
                f" {deeper[0]} exists: the dataset is one level too deep; use {inner} as the "
                "stoic folder (move its contents up)."
            )
    return DatasetError(
        f"{expected} not found: expected the STOIC 2021 index CSV (columns "
        f"{','.join(CSV_COLUMNS)}).{hint} {_SYNTH_HINT}"
    )


def _check_volume_folder(root: Path) -> None:
    """Raise a :class:`DatasetError` unless ``<root>/data/mha`` is a folder."""
    folder = root / VOLUME_DIR
    if folder.is_dir():
        return
    hint = ""
    for wrong in (root / "mha", root / "data"):
        if wrong.is_dir() and any(wrong.glob("*.mha")):
            hint = f" The volumes seem to be in {wrong}; move them to {folder}."
            break
    raise DatasetError(
        f"{folder} not found: expected the CT volumes as {folder}/<PatientID>.mha.{hint} "
        f"{_SYNTH_HINT}"
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
            f"index has the header {','.join(CSV_COLUMNS)}. {_SYNTH_HINT}"
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
    split, order = generic_original(len(frame))
    table = pd.DataFrame(
        {
            "path": VOLUME_DIR + "/" + ids + ".mha",
            "label": np.nan_to_num(values).astype(np.int64),
            "patient": ids,
            "original_split": split,
            "original_order": order,
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
        raise ImageDecodeError(f"{path}: CT volume not found.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageDecodeError(
            f"{path}: cannot be read as a CT volume ({_first_line(exc)}); re-download it."
        ) from exc
    if reader.GetDimension() != 3:
        raise ImageDecodeError(
            f"{path}: is a {reader.GetDimension()}-D image; expected a 3-D CT volume (x, y, z)."
        )
    if reader.GetNumberOfComponents() != 1:
        raise ImageDecodeError(
            f"{path}: has {reader.GetNumberOfComponents()} components per voxel; expected one "
            "(Hounsfield units)."
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
        raise ImageDecodeError(f"{path}: empty volume of size {reader.GetSize()}.")
    reader.SetExtractIndex([0, 0, size_z // 2])
    reader.SetExtractSize([size_x, size_y, 1])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageDecodeError(
            f"{path}: the volume's voxel data cannot be read ({_first_line(exc)}); the file is "
            "truncated or corrupt, re-download it."
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
    sliced as ``vol[:, :, z]``), i.e. the stored slice transposed, rows = x (spec §6 #27).
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


# ----------------------------------------------------------------------------- synthetic


def synthetic_ct(rng: np.random.Generator, size: int, depth: int, covid: bool) -> np.ndarray:
    """A chest-CT-like volume in HU, (depth, size, size) int16, axes (z, y, x).

    Air (-1000) around an elliptic body (~40 HU), two lungs (~-800 HU), the heart towards the
    patient's left (larger x), the spine posterior (larger y, ~700 HU). ``covid`` adds
    ground-glass patches (-500..-300 HU) in the lungs of the middle slices, the class signal.
    """
    zz, yy, xx = np.mgrid[0:depth, 0:size, 0:size].astype(np.float64)
    yy, xx = yy / size, xx / size
    zrel = (zz + 0.5) / depth
    shift = rng.normal(0, 0.015, size=2)
    volume = np.full((depth, size, size), -1000.0)
    body = ((xx - 0.5 - shift[0]) / 0.45) ** 2 + ((yy - 0.5 - shift[1]) / 0.36) ** 2 < 1
    volume[body] = 40.0
    lung_extent = np.clip(1 - ((zrel - 0.5) / 0.55) ** 2, 0.05, 1)
    lungs = np.zeros(volume.shape, dtype=bool)
    for centre_x in (0.3, 0.7):
        ellipse = ((xx - centre_x - shift[0]) / 0.15) ** 2 + ((yy - 0.47 - shift[1]) / 0.25) ** 2
        lungs |= ellipse < lung_extent
    volume[lungs] = -800.0
    heart = ((xx - 0.58) / 0.12) ** 2 + ((yy - 0.45) / 0.1) ** 2 < lung_extent
    volume[heart & (zrel < 0.7)] = 45.0
    spine = ((xx - 0.5) / 0.05) ** 2 + ((yy - 0.78) / 0.05) ** 2 < 1
    volume[spine] = 700.0
    if covid:
        middle = np.abs(zz - depth // 2) <= max(1, depth // 5)
        for _ in range(int(rng.integers(3, 6))):
            cx = rng.choice([0.3, 0.7]) + rng.normal(0, 0.04)
            cy = 0.47 + rng.normal(0, 0.08)
            radius = rng.uniform(0.04, 0.08)
            patch = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            volume[patch & lungs & middle] = rng.uniform(-500, -300)
    volume += rng.normal(0, 15, size=volume.shape)
    return np.round(np.clip(volume, -1024, 3071)).astype(np.int16)


def write_volume(volume: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    """Write a (z, y, x) int16 HU array as an uncompressed .mha with CT-like geometry.

    ``spacing`` is (x, y, z) in mm; the origin puts the volume's centre near (0, 0, -150).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    depth, height, width = volume.shape
    image.SetOrigin(
        (-0.5 * width * spacing[0], -0.5 * height * spacing[1], -150 - 0.5 * depth * spacing[2])
    )
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    sitk.WriteImage(image, os.fspath(tmp), useCompression=False)
    os.replace(tmp, path)


def synth_stoic(root: Path, options: SynthOptions) -> None:
    """STOIC layout: ``metadata/reference.csv`` and int16 ``data/mha/<PatientID>.mha`` volumes.

    ``options.per_class`` volumes per class of ``16 x size x size`` voxels (z, y, x).
    """
    rng = np.random.default_rng(options.seed)
    n = 2 * options.per_class
    labels = rng.permutation([0] * options.per_class + [1] * options.per_class)
    ids = np.sort(rng.choice(np.arange(10 * n + 10), size=n, replace=False))
    field_of_view = 360.0
    spacing = (field_of_view / options.size, field_of_view / options.size, 300.0 / _SYNTH_DEPTH)
    rows = []
    for patient, label in zip(ids, labels, strict=True):
        volume = synthetic_ct(rng, options.size, _SYNTH_DEPTH, bool(label))
        write_volume(volume, root / VOLUME_DIR / f"{patient}.mha", spacing)
        severe = int(label == 1 and rng.random() < 0.3)
        rows.append({"PatientID": str(patient), "probCOVID": int(label), "probSevere": severe})
    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    atomic_write_text(root / CSV_NAME, frame.to_csv(index=False))


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
        synth=synth_stoic,
        load=load_stoic,
        description=(
            "2,000 chest CTs from the STOIC 2021 challenge (French multicentre); COVID-19 "
            "negative vs positive, from each volume's middle axial slice."
        ),
    ),
)
