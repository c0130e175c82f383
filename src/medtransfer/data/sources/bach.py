"""BACH, the ICIAR 2018 Grand Challenge on BreAst Cancer Histology images (``bach``).

Published layout (the challenge's ``ICIAR2018_BACH_Challenge`` archive;
spec/datasets-and-models.md §1.1)::

    <root>/ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv   no header: file,class
    <root>/ICIAR2018_BACH_Challenge/Photos/Normal/n001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/Benign/b001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/InSitu/is001.tif
    <root>/ICIAR2018_BACH_Challenge/Photos/Invasive/iv001.tif

The CSV has no header row: column 0 is the file name, column 1 the class string, which is
also the image's folder. Normal 0, Benign 1, InSitu 2, Invasive 3 (plain categorical
classes, whatever the original's README says). Another class string is reported with its
row and the row left out (the original raised ``ValueError`` on it); a file-name prefix
(``n``/``b``/``is``/``iv``) that disagrees with the class is reported. The release has no
patient ids, so each image is its own patient. The original's split is the generic one:
``sample(frac=1, random_state=42)`` over the CSV's 400 rows, 320 train / 80 test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, generic_original
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions, write_image
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_text

CLASS_STRINGS = ("Normal", "Benign", "InSitu", "Invasive")
CLASS_NAMES = ("normal", "benign", "in_situ", "invasive")
PREFIXES = {"n": 0, "b": 1, "is": 2, "iv": 3}
CHALLENGE_DIR = "ICIAR2018_BACH_Challenge"
PHOTOS_DIR = f"{CHALLENGE_DIR}/Photos"
CSV_NAME = "microscopy_ground_truth.csv"
_PREFIX = re.compile(r"^(is|iv|n|b)\d", re.IGNORECASE)
_SYNTH_HINT = "Run `medtransfer datasets synth --dataset bach --out DIR` to see the layout."


# --------------------------------------------------------------------------- reading


def _photos_dir(root: Path) -> Path:
    """``<root>/ICIAR2018_BACH_Challenge/Photos``, or :class:`DatasetError` on bad nesting."""
    folder = root / PHOTOS_DIR
    if folder.is_dir():
        return folder
    if (root / "Photos").is_dir():
        raise DatasetError(
            f"{folder} not found but {root / 'Photos'} exists: one level too shallow; put "
            f"Photos/ inside {root / CHALLENGE_DIR}/ as in the challenge archive. {_SYNTH_HINT}"
        )
    deeper = sorted(p.parent for p in root.glob(f"*/{PHOTOS_DIR}") if p.is_dir()) + sorted(
        p for p in root.glob(f"{CHALLENGE_DIR}/*/Photos") if p.is_dir()
    )
    if deeper:
        raise DatasetError(
            f"{folder} not found but {deeper[0]} exists: nested one level too deep; move its "
            f"contents up so that {folder} exists. {_SYNTH_HINT}"
        )
    raise DatasetError(
        f"{folder} not found: expected {PHOTOS_DIR}/{CSV_NAME} and the class folders "
        f"{', '.join(CLASS_STRINGS)} of the ICIAR 2018 BACH archive. {_SYNTH_HINT}"
    )


def _read_ground_truth(csv_path: Path) -> pd.DataFrame:
    """The header-less ground-truth CSV as strings, N rows of (file name, class string)."""
    if not csv_path.is_file():
        raise DatasetError(
            f"{csv_path} not found: expected the ground-truth CSV (no header; file name, class "
            f"string) of the challenge archive next to the class folders. {_SYNTH_HINT}"
        )
    try:
        frame = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < 2:
        raise DatasetError(
            f"{csv_path}: expected 2 columns (file name, class string), found {frame.shape[1]}; "
            "the class column is missing."
        )
    return frame


def _class_problems(raw: pd.Series, where: list[str]) -> tuple[np.ndarray, list[Problem]]:
    """Class index per row (N,; -1 for an unknown string) and a problem per unknown one."""
    classes = raw.map({name: i for i, name in enumerate(CLASS_STRINGS)})
    lookup = {name.lower(): name for name in CLASS_STRINGS}
    problems = []
    for i in np.flatnonzero(classes.isna().to_numpy()):
        near = lookup.get(raw.iat[i].lower().replace(" ", "").replace("_", ""))
        hint = f"did you mean {near!r}? " if near else ""
        header = "the file has no header row; delete this line. " if i == 0 and not near else ""
        problems.append(
            Problem(
                "unknown-label",
                where[i],
                f"class {raw.iat[i]!r} is not one of {', '.join(CLASS_STRINGS)} (exact spelling); "
                "the row is left out",
                f"{hint}{header}correct the class string".strip(),
            )
        )
    return classes.fillna(-1).astype("int64").to_numpy(), problems


def _prefix_problems(names: pd.Series, labels: np.ndarray, where: list[str]) -> list[Problem]:
    """A problem per row (N,) whose n/b/is/iv file-name prefix disagrees with its class."""
    problems = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        if label < 0:
            continue
        match = _PREFIX.match(name)
        if match is None:
            problems.append(
                Problem(
                    "bad-name",
                    where[i],
                    "file name does not start with n, b, is or iv and a number (e.g. b001.tif)",
                )
            )
        elif PREFIXES[match[1].lower()] != label:
            said = CLASS_STRINGS[PREFIXES[match[1].lower()]]
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"file name says {said} but the CSV says {CLASS_STRINGS[label]}; the CSV's "
                    f"class is used (and its folder, {CLASS_STRINGS[label]}/)",
                    "check which of the two is right",
                )
            )
    return problems


def read_bach(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of ``microscopy_ground_truth.csv`` in file order; see the module docstring."""
    photos = _photos_dir(root)
    frame = _read_ground_truth(photos / CSV_NAME)
    names = frame.iloc[:, 0].astype(str).str.strip()
    raw = frame.iloc[:, 1].astype(str).str.strip()
    where = [f"{CSV_NAME} row {i + 1} ({name})" for i, name in enumerate(names)]
    classes, problems = _class_problems(raw, where)
    duplicate = names.duplicated(keep="first").to_numpy()
    problems.extend(
        Problem(
            "duplicate",
            where[i],
            "image listed more than once; only its first row is used",
            "remove the repeated row",
        )
        for i in np.flatnonzero(duplicate)
    )
    problems.extend(_prefix_problems(names, classes, where))
    folders = np.array((*CLASS_STRINGS, ""), dtype=object)[classes]
    split, position = generic_original(len(frame))
    table = pd.DataFrame(
        {
            "path": f"{PHOTOS_DIR}/" + folders + "/" + names,
            "label": classes,
            "patient": "",
            "original_split": split,
            "original_order": position,
        }
    )
    return SourceTable(table.loc[(classes >= 0) & ~duplicate], problems)


# --------------------------------------------------------------------------- drawing


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float) -> None:
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)


def _ring(
    rng: np.random.Generator, centre: np.ndarray, radius: float, n: int
) -> list[tuple[float, float]]:
    """``n`` nucleus centres on a jittered circle (a duct's epithelium), in pixels."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.normal(1, 0.06, n)
    return [(float(x), float(y)) for x, y in centre + np.c_[r * np.cos(angles), r * np.sin(angles)]]


def _layout(
    rng: np.random.Generator, size: int, label: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """Nucleus centres and lumen circles (x, y, r) in pixels for a class.

    Normal: two or three small ducts with one ring of nuclei and an open lumen; benign:
    more and larger ducts with two rings; in situ: ducts filled with nuclei; invasive:
    dense nuclei scattered everywhere, no ducts.
    """
    nuclei: list[tuple[float, float]] = []
    lumens: list[tuple[float, float, float]] = []
    n_ducts, duct_r, stroma = ((3, 0.1, 8), (5, 0.13, 15), (3, 0.15, 20), (0, 0.0, 140))[label]
    for _ in range(n_ducts):
        centre = rng.uniform(0.15, 0.85, 2) * size
        radius = duct_r * size * rng.uniform(0.8, 1.2)
        if label == 2:
            count = int(35 * (radius / size / 0.1) ** 2)
            offsets = rng.normal(0, radius / 2.2, (count, 2))
            nuclei.extend(map(tuple, centre + offsets))
            nuclei.extend(_ring(rng, centre, radius, int(2 * np.pi * radius / (0.03 * size))))
            continue
        lumens.append((float(centre[0]), float(centre[1]), 0.7 * radius))
        nuclei.extend(_ring(rng, centre, radius, int(2 * np.pi * radius / (0.03 * size))))
        if label == 1:
            nuclei.extend(
                _ring(rng, centre, 1.25 * radius, int(2 * np.pi * radius / (0.035 * size)))
            )
    nuclei.extend(map(tuple, rng.uniform(0, size, (stroma, 2))))
    return nuclei, lumens


def histology_patch(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """An H&E-like picture whose BACH class is learnable, (size, size, 3) float in [0, 1].

    Pink eosin stroma with fibre texture, white lumens and purple haematoxylin nuclei laid
    out per class (see :func:`_layout`).
    """
    nuclei, lumens = _layout(rng, size, label)
    nucleus_mask = Image.new("L", (size, size), 0)
    lumen_mask = Image.new("L", (size, size), 0)
    draw_n, draw_l = ImageDraw.Draw(nucleus_mask), ImageDraw.Draw(lumen_mask)
    radius = max(0.9, 0.012 * size)
    for x, y in nuclei:
        _disc(draw_n, x, y, radius * rng.uniform(0.8, 1.3))
    for x, y, r in lumens:
        _disc(draw_l, x, y, r)
    blur = ImageFilter.GaussianBlur(radius=max(0.4, 0.003 * size))
    nuc = np.asarray(nucleus_mask.filter(blur), dtype=np.float64)[..., None] / 255
    lum = np.asarray(lumen_mask.filter(blur), dtype=np.float64)[..., None] / 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    fibres = 0.5 + 0.5 * np.sin(2 * np.pi * (11 * xx + 4 * yy + rng.uniform(0, 1)))
    stroma = np.array([0.92, 0.66, 0.8]) - 0.08 * fibres[..., None] * np.array([0.2, 1.0, 0.5])
    image = stroma * (1 - lum) + np.array([0.96, 0.93, 0.95]) * lum
    image = image * (1 - nuc) + np.array([0.33, 0.18, 0.52]) * nuc
    image = image + rng.normal(0, 0.03, size=image.shape)
    return np.clip(image, 0, 1)


# --------------------------------------------------------------------------- writing


def synth_bach(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` 8-bit RGB TIFFs per class and the header-less ground-truth CSV.

    Files are named as in the release (``n001.tif``, ``b001.tif``, ``is001.tif``,
    ``iv001.tif``) and listed in sorted file-name order.
    """
    rng = np.random.default_rng(options.seed)
    photos = root / PHOTOS_DIR
    rows = []
    for label, prefix in enumerate(PREFIXES):
        for number in range(1, options.per_class + 1):
            name = f"{prefix}{number:03d}.tif"
            image = histology_patch(rng, options.size, label)
            write_image(image, photos / CLASS_STRINGS[label] / name)
            rows.append((name, CLASS_STRINGS[label]))
    rows.sort()
    frame = pd.DataFrame(rows)
    atomic_write_text(photos / CSV_NAME, frame.to_csv(index=False, header=False))


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="bach",
        source_url="https://iciar2018-challenge.grand-challenge.org/",
        title="BACH (ICIAR 2018 breast cancer histology)",
        aliases=("iciar2018", "iciar-2018", "bach2018", "iciar2018_bach"),
        folder="bach",
        class_names=CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_bach,
        synth=synth_bach,
        description="400 H&E breast histology microscopy images (2048x1536 RGB TIFF), 100 "
        "each normal, benign, in situ and invasive carcinoma.",
    ),
)
