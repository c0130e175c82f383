"""EyePACS / Kaggle Diabetic Retinopathy Detection (``diabetic_retinopathy``).

Published layout (the Kaggle competition download, with the post-competition solution
file saved as ``testLabels.csv``; spec/datasets-and-models.md §1.5)::

    <root>/trainLabels.csv          image,level            10_left,0
    <root>/train/10_left.jpeg
    <root>/testLabels.csv           image,level,Usage      1_left,0,Private
    <root>/test/1_left.jpeg

Columns are used by position, as the original did: column 0 is the image id without
extension (``<patient>_left`` / ``<patient>_right``), column 1 the DR ``level`` 0..4
(0 no DR, 1 mild, 2 moderate, 3 severe, 4 proliferative). ``Usage`` (Public/Private) is
ignored; both kinds of test rows are used. The patient id is the number before
``_left``/``_right``; Kaggle's train and test patients are disjoint, and a number found in
both files is reported.

The original's split is the official one: ``trainLabels.csv`` rows are train, in the order
of ``sample(frac=1, random_state=42)`` over that file (this order decides the original's
validation hold-out); ``testLabels.csv`` rows are test, shuffled the same way on their own.

This module also holds the fundus drawing primitive the iChallenge writers share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable, generic_original
from medtransfer.data.spec import MEAN_PER_CLASS_ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions, write_image
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_text

CLASS_NAMES = ("no_dr", "mild", "moderate", "severe", "proliferative")
SPLIT_FILES = {"train": "trainLabels.csv", "test": "testLabels.csv"}
IMAGE_SUFFIX = ".jpeg"
_NAME = re.compile(r"^(?P<patient>\d+)_(?:left|right)$")
_SYNTH_HINT = "Run `medtransfer datasets synth --dataset diabetic_retinopathy --out DIR` to see it."


# --------------------------------------------------------------------------- reading


def _read_index(root: Path, split: str) -> pd.DataFrame:
    """The split's label CSV as strings, N rows; columns 0 (image id) and 1 (level) checked."""
    csv_path = root / SPLIT_FILES[split]
    if not csv_path.is_file():
        hint = ""
        if split == "test" and (root / "retinopathy_solution.csv").is_file():
            hint = " A file retinopathy_solution.csv exists: rename it to testLabels.csv."
        elif (root / f"{SPLIT_FILES[split]}.zip").is_file():
            hint = f" Unzip {SPLIT_FILES[split]}.zip first."
        raise DatasetError(
            f"{csv_path} not found: expected the {split} label CSV (columns image,level"
            f"{',Usage' if split == 'test' else ''}) of the Kaggle Diabetic Retinopathy "
            f"release.{hint} {_SYNTH_HINT}"
        )
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < 2:
        raise DatasetError(
            f"{csv_path}: expected the columns image,level (used by position), found "
            f"{list(frame.columns)}; the level column is missing."
        )
    if _NAME.match(str(frame.columns[0]).strip()):
        raise DatasetError(
            f"{csv_path}: the first line {','.join(map(str, frame.columns))!r} is a data row; "
            "the file needs the header line image,level as in the Kaggle release."
        )
    return frame


def _locate_images(root: Path, split: str, first: str | None) -> None:
    """Raise :class:`DatasetError` when the split's images are not in ``<root>/<split>/``.

    Probes only the first listed image (a ``stat``, no decoding) to catch a folder nested
    one level too deep or too shallow.
    """
    folder = root / split
    probe = f"{first}{IMAGE_SUFFIX}" if first else None
    if folder.is_dir():
        if probe and not (folder / probe).is_file() and (folder / split / probe).is_file():
            raise DatasetError(
                f"{folder / split}: the {split} images are nested one level too deep; move "
                f"them up so that {folder / probe} exists. {_SYNTH_HINT}"
            )
        return
    if probe and (root / probe).is_file():
        raise DatasetError(
            f"{folder} not found but {root / probe} exists: the {split} images must be in the "
            f"sub-folder {split}/ next to {SPLIT_FILES[split]}. {_SYNTH_HINT}"
        )
    deeper = sorted(p for p in root.glob(f"*/{split}") if p.is_dir())
    if deeper:
        raise DatasetError(
            f"{folder} not found but {deeper[0]} exists: the dataset is nested one level too "
            f"deep; move the contents of {deeper[0].parent} up into {root}. {_SYNTH_HINT}"
        )
    raise DatasetError(
        f"{folder} not found: expected the {split} images as {split}/<image>{IMAGE_SUFFIX} "
        f"next to {SPLIT_FILES[split]}. {_SYNTH_HINT}"
    )


def _row_problems(
    csv_name: str, names: pd.Series, raw_levels: pd.Series
) -> tuple[np.ndarray, pd.Series, list[Problem]]:
    """Check one split's rows (all N of them).

    Returns (bool keep mask (N,), integer level per row (N,; -1 where invalid), problems).
    Rows with an invalid level and repeats of an image id are dropped; a malformed image
    id is reported but kept.
    """
    numeric = pd.to_numeric(raw_levels.str.strip(), errors="coerce")
    valid = numeric.notna() & (numeric % 1 == 0) & numeric.between(0, 4)
    levels = numeric.where(valid, -1).astype("int64")
    bad_name = ~names.str.match(_NAME.pattern)
    duplicate = names.duplicated(keep="first")
    problems: list[Problem] = []
    for i in np.flatnonzero(~valid.to_numpy()):
        problems.append(
            Problem(
                "unknown-label",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                f"level {raw_levels.iat[i]!r} is not an integer 0..4; the row is left out",
                "correct the level (0 no DR .. 4 proliferative)",
            )
        )
    for i in np.flatnonzero(bad_name.to_numpy()):
        problems.append(
            Problem(
                "bad-name",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                "image id is not <patient number>_left or <patient number>_right; the whole id "
                "is used as its patient",
                "use the Kaggle id without extension, e.g. 10_left",
            )
        )
    for i in np.flatnonzero(duplicate.to_numpy()):
        problems.append(
            Problem(
                "duplicate",
                f"{csv_name} row {i + 2} ({names.iat[i]})",
                "image id listed more than once; only its first row is used",
                "remove the repeated row",
            )
        )
    return (valid & ~duplicate).to_numpy(), levels, problems


def _read_split(root: Path, split: str) -> tuple[pd.DataFrame, list[Problem]]:
    """One split's rows: path, label, patient, original_split, original_order (+ csv_row)."""
    frame = _read_index(root, split)
    names = frame.iloc[:, 0].astype(str).str.strip()
    _locate_images(root, split, names.iat[0] if len(names) else None)
    keep, levels, problems = _row_problems(SPLIT_FILES[split], names, frame.iloc[:, 1])
    _, position = generic_original(len(frame), n_train=len(frame))
    patient = names.str.extract(_NAME)["patient"]
    table = pd.DataFrame(
        {
            "path": f"{split}/" + names + IMAGE_SUFFIX,
            "label": levels,
            "patient": patient.fillna(names),
            "original_split": split,
            "original_order": position,
            "csv_row": np.arange(len(frame)) + 2,
        }
    )
    return table.loc[keep], problems


def _overlap_problems(train: pd.DataFrame, test: pd.DataFrame) -> list[Problem]:
    """A problem per patient number listed in both label files."""
    shared = np.intersect1d(train["patient"].unique(), test["patient"].unique())
    problems = []
    for patient in shared:
        train_row = int(train.loc[train["patient"] == patient, "csv_row"].iat[0])
        test_row = int(test.loc[test["patient"] == patient, "csv_row"].iat[0])
        problems.append(
            Problem(
                "patient-overlap",
                f"{SPLIT_FILES['train']} row {train_row} / {SPLIT_FILES['test']} row {test_row}",
                f"patient {patient} appears in both the train and the test file (Kaggle's are "
                "disjoint); the patient split keeps them together, the original split does not",
                "check that the label files come from the same Kaggle release",
            )
        )
    return problems


def read_diabetic_retinopathy(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """Rows of both official splits: train rows (file order), then test rows (file order).

    ``original_split`` is the file a row comes from; ``original_order`` its position in
    that file's ``sample(frac=1, random_state=42)`` order. See the module docstring.
    """
    train, train_problems = _read_split(root, "train")
    test, test_problems = _read_split(root, "test")
    problems = [*train_problems, *test_problems, *_overlap_problems(train, test)]
    return SourceTable(pd.concat([train, test], ignore_index=True), problems)


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Fundus:
    """A drawn fundus photograph and where its landmarks are.

    ``image``: (size, size, 3) float in [0, 1] (black outside the retina); ``mask``:
    (size, size) bool, the retinal disc; ``optic`` and ``macula``: (x, y) centres in
    units of the image side; ``xx``, ``yy``: (size, size) pixel-centre coordinates in the
    same units.
    """

    image: np.ndarray
    mask: np.ndarray
    optic: tuple[float, float]
    macula: tuple[float, float]
    xx: np.ndarray
    yy: np.ndarray


def _blob(fundus: Fundus, centre: tuple[float, float], radius: float) -> np.ndarray:
    """A Gaussian bump of the given radius at ``centre``, (size, size) float in [0, 1]."""
    d2 = (fundus.xx - centre[0]) ** 2 + (fundus.yy - centre[1]) ** 2
    return np.exp(-d2 / (2 * radius**2))


def paint(
    fundus: Fundus,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[float, float, float],
    strength: float = 1.0,
) -> None:
    """Blend ``colour`` into the image (in place) with a Gaussian weight at ``centre``.

    The radius is at least one pixel, so spots stay visible on small images.
    """
    size = fundus.image.shape[0]
    weight = strength * _blob(fundus, centre, max(radius, 0.8 / size))[..., None]
    weight = np.clip(weight, 0, 1)
    fundus.image[:] = fundus.image * (1 - weight) + np.asarray(colour)[None, None, :] * weight


def _vessels(fundus: Fundus, rng: np.random.Generator, shade: float) -> None:
    """Four darker vessel arcades leaving the optic disc (in place)."""
    ox, oy = fundus.optic
    direction = 1.0 if fundus.macula[0] > ox else -1.0
    size = fundus.image.shape[0]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for sign in (-1.0, 1.0):
        for spread, width in ((0.18, 0.012), (0.32, 0.008)):
            t = np.linspace(0, 1, 16)
            xs = ox + direction * 0.45 * t
            ys = oy + sign * spread * np.sin(np.pi * 0.8 * t) + rng.normal(0, 0.008, t.shape)
            points = [(float(x * size), float(y * size)) for x, y in zip(xs, ys, strict=True)]
            draw.line(points, fill=255, width=max(1, round(width * size)), joint="curve")
    blurred = canvas.filter(ImageFilter.GaussianBlur(radius=max(0.5, 0.004 * size)))
    darkness = np.asarray(blurred, dtype=np.float64) / 255.0
    fundus.image[:] *= 1 - shade * darkness[..., None]


def draw_fundus(rng: np.random.Generator, size: int, right_eye: bool) -> Fundus:
    """A colour-fundus-like picture: orange retina on black, optic disc, macula, vessels.

    The optic disc sits on the nasal side (right of the image for a right eye) and the
    macula on the other side of the centre. Returns a :class:`Fundus` whose ``image`` is
    (size, size, 3) float in [0, 1]; callers paint their class signal on it.
    """
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx, cy = 0.5 + rng.normal(0, 0.01, size=2)
    r = np.hypot(xx - cx, yy - cy)
    mask = r < 0.47
    falloff = 1 - 0.55 * (r / 0.47) ** 2
    base = np.array([0.82, 0.36, 0.14]) * rng.uniform(0.9, 1.1)
    image = np.clip(falloff[..., None] * base[None, None, :], 0, 1)
    side = 1.0 if right_eye else -1.0
    optic = (cx + side * 0.2 + rng.normal(0, 0.01), cy + rng.normal(0, 0.01))
    macula = (cx - side * 0.06 + rng.normal(0, 0.01), cy + rng.normal(0, 0.01))
    fundus = Fundus(image, mask, optic, macula, xx, yy)
    paint(fundus, macula, 0.07, (0.45, 0.16, 0.06), 0.6)
    _vessels(fundus, rng, shade=0.35)
    paint(fundus, optic, 0.05, (1.0, 0.86, 0.6), 1.0)
    return fundus


def finish_fundus(fundus: Fundus, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise and blacken everything outside the retina; (size, size, 3) float."""
    image = fundus.image + rng.normal(0, 0.02, size=fundus.image.shape)
    image[~fundus.mask] = 0.0
    return np.clip(image, 0, 1)


def random_point(
    rng: np.random.Generator, spread: float, centre: tuple[float, float] = (0.5, 0.5)
) -> tuple[float, float]:
    """A uniform random point within ``spread`` of ``centre`` (image-side units)."""
    angle = rng.uniform(0, 2 * np.pi)
    radius = spread * np.sqrt(rng.uniform(0, 1))
    return (centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle))


def dr_fundus(rng: np.random.Generator, size: int, level: int, right_eye: bool) -> np.ndarray:
    """A fundus whose DR ``level`` (0..4) is learnable, (size, size, 3) float in [0, 1].

    Dark red dots (microaneurysms, haemorrhages) grow in number with the level, yellow
    exudates appear from level 2, and level 4 adds a tuft of new vessels at the disc.
    """
    fundus = draw_fundus(rng, size, right_eye)
    for _ in range((0, 4, 9, 16, 20)[level]):
        paint(fundus, random_point(rng, 0.36), rng.uniform(0.012, 0.025), (0.35, 0.02, 0.02))
    for _ in range((0, 0, 3, 6, 8)[level]):
        paint(fundus, random_point(rng, 0.3), rng.uniform(0.01, 0.02), (1.0, 0.92, 0.45))
    if level == 4:
        ox, oy = fundus.optic
        for _ in range(10):
            centre = (ox + rng.normal(0, 0.04), oy + rng.normal(0, 0.04))
            paint(fundus, centre, 0.008, (0.55, 0.0, 0.05), 0.9)
    return finish_fundus(fundus, rng)


# --------------------------------------------------------------------------- writing


def _synth_labels(rng: np.random.Generator, per_class: int) -> dict[str, np.ndarray]:
    """Shuffled levels per split, (n_train,) and (n_test,) int.

    About two thirds of each class go to train, the rest (at least one image per class
    when ``per_class >= 2``) to test.
    """
    n_test = max(1, per_class // 3) if per_class >= 2 else 0
    train = np.repeat(np.arange(5), per_class - n_test)
    test = np.repeat(np.arange(5), n_test)
    return {"train": rng.permutation(train), "test": rng.permutation(test)}


def synth_diabetic_retinopathy(root: Path, options: SynthOptions) -> None:
    """Write both splits: ``options.per_class`` RGB JPEGs per level in all, two eyes a patient.

    Train and test patients get disjoint numbers; rows are sorted by patient number, left
    eye before right, as in Kaggle's files; ``testLabels.csv`` has the ``Usage`` column. With
    an odd number of images in a split its last patient has a left eye only.
    """
    rng = np.random.default_rng(options.seed)
    levels = _synth_labels(rng, options.per_class)
    n_patients = {split: (len(v) + 1) // 2 for split, v in levels.items()}
    numbers = rng.permutation(np.arange(1, 3 * sum(n_patients.values()) + 2))
    patients = {
        "train": np.sort(numbers[: n_patients["train"]]),
        "test": np.sort(numbers[n_patients["train"] : sum(n_patients.values())]),
    }
    for split, split_levels in levels.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i, level in enumerate(split_levels):
            eye = "left" if i % 2 == 0 else "right"
            name = f"{patients[split][i // 2]}_{eye}"
            image = dr_fundus(rng, options.size, int(level), right_eye=eye == "right")
            write_image(image, root / split / f"{name}{IMAGE_SUFFIX}", quality=92)
            row = {"image": name, "level": int(level)}
            if split == "test":
                row["Usage"] = "Public" if rng.uniform() < 0.2 else "Private"
            rows.append(row)
        columns = ["image", "level"] + (["Usage"] if split == "test" else [])
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write_text(root / SPLIT_FILES[split], frame.to_csv(index=False))


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="diabetic_retinopathy",
        source_url="https://www.kaggle.com/c/diabetic-retinopathy-detection/data",
        title="EyePACS / Kaggle Diabetic Retinopathy Detection",
        aliases=(
            "eyepacs",
            "kaggle-dr",
            "kaggle_dr",
            "diabetic-retinopathy",
            "diabeticretinopathy",
            "dr",
        ),
        folder="diabetic_retinopathy",
        class_names=CLASS_NAMES,
        metric=MEAN_PER_CLASS_ACCURACY,
        patients="the number before _left/_right in the image id (two eyes per patient)",
        few_shot_resize="shorter",
        read=read_diabetic_retinopathy,
        synth=synth_diabetic_retinopathy,
        description="Retinal fundus photographs graded for diabetic retinopathy, levels 0-4; "
        "official Kaggle train (35,126) and test (53,576) sets.",
    ),
)
