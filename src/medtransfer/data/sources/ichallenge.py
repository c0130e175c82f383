"""iChallenge-AMD and iChallenge-PM (PALM) fundus sets from Baidu Research's iChallenge.

Published layouts (spec/datasets-and-models.md §1.6–§1.7)::

    <root>/Training400/AMD/A0001.jpg                  ichallenge_amd, label 1 (AMD)
    <root>/Training400/Non-AMD/N0001.jpg              ichallenge_amd, label 0
    <root>/amd_labels.csv                             optional: stem,label (header row)

    <root>/PALM-Training400/PALM-Training400/H0001.jpg      ichallenge_pm (folder twice)
    <root>/PALM-Training400/fovea_location_csv.csv          optional, the original's custom CSV

Neither CSV is part of the official downloads; the original needed both. Here they are
optional: without them the rows are the images found in the folders, in sorted file-name
order. With them, the CSV's rows and order are used (as the original did) and every
disagreement between the CSV, the folder and the file-name prefix is reported.

AMD labels: ``A*`` files in ``AMD/`` are 1, ``N*`` files in ``Non-AMD/`` are 0 (the CSV's
label decides when the CSV is there). PM labels come from the file-name prefix: ``N``
normal, ``H`` high myopia, ``P`` pathological myopia. ``LabelOptions.pm_positive == "P"``
(default; the official PALM definition and what the original's code did) makes only ``P``
positive; ``"HP"`` (the original's README) makes ``H`` and ``P`` positive.

Neither set has patient ids (one image per eye, no subject key in the release).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.sources.base import (
    PM_POSITIVE_POLICIES,
    LabelOptions,
    Problem,
    SourceTable,
    generic_original,
)
from medtransfer.data.sources.eyepacs import (
    Fundus,
    draw_fundus,
    finish_fundus,
    paint,
    random_point,
)
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions, write_image
from medtransfer.errors import DatasetError
from medtransfer.fsutil import atomic_write_text

AMD_CLASS_NAMES = ("non_amd", "amd")
AMD_CSV = "amd_labels.csv"
AMD_DIR = "Training400"
AMD_FOLDERS = {1: "AMD", 0: "Non-AMD"}
AMD_PREFIXES = {"A": 1, "N": 0}

PM_CLASS_NAMES = ("non_pm", "pm")
PM_OUTER = "PALM-Training400"
PM_IMAGES = f"{PM_OUTER}/{PM_OUTER}"
PM_CSV = f"{PM_OUTER}/fovea_location_csv.csv"
PM_PREFIXES = ("N", "H", "P")
PM_POSITIVES = {"P": frozenset("P"), "HP": frozenset("HP")}

IMAGE_SUFFIXES = (".jpg", ".jpeg")


def _synth_hint(name: str) -> str:
    return f"Run `medtransfer datasets synth --dataset {name} --out DIR` to see the layout."


def _list_images(folder: Path) -> list[str]:
    """Sorted names of the JPEG files directly in ``folder`` (none if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _read_csv(csv_path: Path, min_columns: int, expected: str) -> pd.DataFrame:
    """A header-row CSV as strings, N rows; :class:`DatasetError` if unreadable or too narrow."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    if frame.shape[1] < min_columns:
        raise DatasetError(
            f"{csv_path}: expected at least {min_columns} columns ({expected}, used by "
            f"position after a header row), found {list(frame.columns)}."
        )
    return frame


def _row_names(csv_name: str, names: pd.Series) -> list[str]:
    """``"<csv> row <n> (<name>)"`` per row (the header is row 1), for problems; (N,)."""
    return [f"{csv_name} row {i + 2} ({name})" for i, name in enumerate(names)]


def _duplicate_problems(names: pd.Series, where: list[str]) -> tuple[np.ndarray, list[Problem]]:
    """Bool mask (N,) of repeated names (all but the first) and a problem for each."""
    duplicate = names.duplicated(keep="first").to_numpy()
    problems = [
        Problem(
            "duplicate",
            where[i],
            "image listed more than once; only its first row is used",
            "remove the repeated row",
        )
        for i in np.flatnonzero(duplicate)
    ]
    return duplicate, problems


def _unlisted_problems(
    folder: str, files: list[str], listed: set[str], csv_name: str
) -> list[Problem]:
    """A problem for each image in ``folder`` that the CSV does not list."""
    return [
        Problem(
            "unlisted",
            f"{folder}/{name}",
            f"image on disk but not listed in {csv_name}; it is not used",
            f"add it to {csv_name}, or remove {csv_name} to use every image in the folders",
        )
        for name in files
        if name not in listed
    ]


def _original_columns(n_rows: int) -> dict[str, np.ndarray]:
    """The generic original split over all ``n_rows`` index rows, before any row is dropped.

    Equal to what the manifest's generic rule gives when no row is dropped; when a bad row
    is dropped, the other rows keep the split the original gave them.
    """
    split, position = generic_original(n_rows)
    return {"original_split": split, "original_order": position}


# --------------------------------------------------------------------------- AMD: reading


def _amd_image_dir(root: Path) -> Path:
    """``<root>/Training400``, or :class:`DatasetError` naming a mis-nested tree."""
    folder = root / AMD_DIR
    hint = _synth_hint("ichallenge_amd")
    if folder.is_dir():
        has_classes = any((folder / name).is_dir() for name in AMD_FOLDERS.values())
        if not has_classes and (folder / AMD_DIR).is_dir():
            raise DatasetError(
                f"{folder / AMD_DIR}: nested one level too deep; move its AMD/ and Non-AMD/ "
                f"folders up into {folder}. {hint}"
            )
        return folder
    if any((root / name).is_dir() for name in AMD_FOLDERS.values()):
        raise DatasetError(
            f"{folder} not found but {root} holds AMD/ or Non-AMD/ directly: put both folders "
            f"inside {folder}/ as in the official Training400 archive. {hint}"
        )
    deeper = sorted(p for p in root.glob(f"*/{AMD_DIR}") if p.is_dir())
    if deeper:
        raise DatasetError(
            f"{folder} not found but {deeper[0]} exists: nested one level too deep; move "
            f"{deeper[0]} up into {root}. {hint}"
        )
    raise DatasetError(
        f"{folder} not found: expected {AMD_DIR}/AMD/A*.jpg and {AMD_DIR}/Non-AMD/N*.jpg "
        f"(the official iChallenge-AMD training archive). {hint}"
    )


def _amd_path(name: str, label: int) -> str:
    return f"{AMD_DIR}/{AMD_FOLDERS[label]}/{name}"


def _amd_prefix_problems(
    names: pd.Series, labels: np.ndarray, where: list[str], source: str
) -> list[Problem]:
    """A problem per file name (N,) whose A/N prefix is unknown or disagrees with its label."""
    problems = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        prefix = AMD_PREFIXES.get(name[:1].upper())
        if prefix is None:
            detail = (
                f"file name does not start with A (AMD) or N (non-AMD); the {source} label is used"
            )
            problems.append(Problem("bad-name", where[i], detail))
        elif prefix != label:
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"file name says {AMD_CLASS_NAMES[prefix]} but the {source} says "
                    f"{AMD_CLASS_NAMES[label]}; the {source}'s label is used",
                    "check which of the two is right",
                )
            )
    return problems


def _amd_from_folders(image_dir: Path) -> SourceTable:
    """Rows from the two class folders in sorted file-name order; the folder gives the label."""
    entries = sorted(
        (name, label)
        for label, folder in AMD_FOLDERS.items()
        for name in _list_images(image_dir / folder)
    )
    names = pd.Series([name for name, _ in entries], dtype=str)
    labels = np.array([label for _, label in entries], dtype=np.int64)
    paths = [_amd_path(name, label) for name, label in entries]
    problems = [
        Problem(
            "empty-class",
            f"{AMD_DIR}/{folder}",
            f"folder missing or holds no .jpg images; class {AMD_CLASS_NAMES[label]} is empty",
            "extract the full Training400 archive",
        )
        for label, folder in AMD_FOLDERS.items()
        if label not in labels
    ]
    stems = names.str.rsplit(".", n=1).str[0]
    duplicate = stems.duplicated(keep="first").to_numpy()
    problems.extend(
        Problem(
            "duplicate",
            paths[i],
            "an image with the same name is in the other class folder; only the first is used",
            "keep it in one folder only",
        )
        for i in np.flatnonzero(duplicate)
    )
    problems.extend(_amd_prefix_problems(names, labels, paths, "folder"))
    table = pd.DataFrame(
        {"path": paths, "label": labels, "patient": "", **_original_columns(len(entries))}
    )
    return SourceTable(table.loc[~duplicate], problems)


def _amd_folder_problems(
    image_dir: Path, stems: pd.Series, labels: np.ndarray, keep: np.ndarray, where: list[str]
) -> list[Problem]:
    """CSV rows (N,) whose image sits in the other class folder, and unlisted images."""
    on_disk = {
        label: set(_list_images(image_dir / folder)) for label, folder in AMD_FOLDERS.items()
    }
    problems = []
    for i in np.flatnonzero(keep):
        file, label = f"{stems.iat[i]}.jpg", int(labels[i])
        if file not in on_disk[label] and file in on_disk[1 - label]:
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"the CSV says {AMD_CLASS_NAMES[label]}, so the original reads "
                    f"{_amd_path(file, label)}, but the image is in "
                    f"{AMD_DIR}/{AMD_FOLDERS[1 - label]}/",
                    "correct the label or move the file",
                )
            )
    listed = {f"{stem}.jpg" for stem in stems}
    for label, folder in AMD_FOLDERS.items():
        problems.extend(
            _unlisted_problems(f"{AMD_DIR}/{folder}", sorted(on_disk[label]), listed, AMD_CSV)
        )
    return problems


def _amd_from_csv(root: Path, image_dir: Path) -> SourceTable:
    """Rows of ``amd_labels.csv`` in file order; the CSV's label decides the folder."""
    frame = _read_csv(root / AMD_CSV, 2, "image stem, label 0/1")
    stems = frame.iloc[:, 0].astype(str).str.strip()
    raw = frame.iloc[:, 1].astype(str).str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    valid = numeric.isin([0, 1]).to_numpy()
    labels = numeric.where(valid, 0).astype("int64").to_numpy()
    where = _row_names(AMD_CSV, stems)
    problems = [
        Problem(
            "unknown-label",
            where[i],
            f"label {raw.iat[i]!r} is not 0 (non-AMD) or 1 (AMD); the row is left out",
            "set the label to 0 or 1",
        )
        for i in np.flatnonzero(~valid)
    ]
    duplicate, duplicates = _duplicate_problems(stems, where)
    problems.extend(duplicates)
    problems.extend(
        Problem(
            "bad-name",
            where[i],
            "column 0 must be the file name without extension (.jpg is appended)",
            "remove the extension",
        )
        for i in np.flatnonzero(stems.str.lower().str.endswith(IMAGE_SUFFIXES).to_numpy())
    )
    keep = valid & ~duplicate
    kept = np.flatnonzero(keep)
    problems.extend(
        _amd_prefix_problems(stems[keep], labels[keep], [where[i] for i in kept], "CSV")
    )
    problems.extend(_amd_folder_problems(image_dir, stems, labels, keep, where))
    table = pd.DataFrame(
        {
            "path": [_amd_path(f"{s}.jpg", int(v)) for s, v in zip(stems, labels, strict=True)],
            "label": labels,
            "patient": "",
            **_original_columns(len(frame)),
        }
    )
    return SourceTable(table.loc[keep], problems)


def read_ichallenge_amd(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """iChallenge-AMD rows: ``amd_labels.csv``'s if present, else the two class folders."""
    image_dir = _amd_image_dir(root)
    if (root / AMD_CSV).is_file():
        return _amd_from_csv(root, image_dir)
    return _amd_from_folders(image_dir)


# --------------------------------------------------------------------------- PM: reading


def _pm_image_dir(root: Path) -> Path:
    """``<root>/PALM-Training400/PALM-Training400``, or :class:`DatasetError` on bad nesting."""
    folder = root / PM_IMAGES
    hint = _synth_hint("ichallenge_pm")
    if folder.is_dir():
        if not _list_images(folder) and (folder / PM_OUTER).is_dir():
            raise DatasetError(
                f"{folder / PM_OUTER}: nested one level too deep (the folder name three times); "
                f"move its images up into {folder}. {hint}"
            )
        return folder
    if _list_images(root / PM_OUTER):
        raise DatasetError(
            f"{folder} not found but {root / PM_OUTER} holds the images: the official archive "
            f"names the folder twice; move them into {folder}/. {hint}"
        )
    if _list_images(root):
        raise DatasetError(
            f"{folder} not found but {root} holds images directly: move them into "
            f"{folder}/ (the folder name twice, as in the official archive). {hint}"
        )
    deeper = sorted(p for p in root.glob(f"*/{PM_IMAGES}") if p.is_dir())
    if deeper:
        raise DatasetError(
            f"{folder} not found but {deeper[0]} exists: nested one level too deep; move "
            f"{deeper[0].parent} up into {root}. {hint}"
        )
    raise DatasetError(
        f"{folder} not found: expected the PALM training images as {PM_IMAGES}/H0001.jpg, "
        f"N0001.jpg, P0001.jpg, ... {hint}"
    )


def _pm_positive(labels: LabelOptions | None) -> frozenset[str]:
    """The prefixes that are positive under the label options."""
    policy = (labels or LabelOptions()).pm_positive
    if policy not in PM_POSITIVES:
        raise DatasetError(
            f"Unknown iChallenge-PM positive rule {policy!r}; choose one of "
            f"{', '.join(PM_POSITIVE_POLICIES)} (--pm-positive)."
        )
    return PM_POSITIVES[policy]


def _pm_labels(
    names: pd.Series, positive: frozenset[str], where: list[str]
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Label per file name from its prefix (N,), a bool mask of known prefixes, problems."""
    prefix = names.str[:1].str.upper()
    known = prefix.isin(PM_PREFIXES).to_numpy()
    labels = prefix.isin(sorted(positive)).to_numpy().astype(np.int64)
    problems = [
        Problem(
            "unknown-label",
            where[i],
            "file name does not start with N (normal), H (high myopia) or P (pathological "
            "myopia), so it has no label; the image is left out",
            "rename the file with its PALM prefix",
        )
        for i in np.flatnonzero(~known)
    ]
    return labels, known, problems


def _pm_raw_problems(
    frame: pd.DataFrame, labels: np.ndarray, keep: np.ndarray, where: list[str], rule: str
) -> list[Problem]:
    """Rows (N,) whose raw label (column 4) disagrees with the prefix rule, or is unknown.

    The original's rule: raw 2 is positive, raw 0 and 1 negative.
    """
    if frame.shape[1] < 5:
        return []
    raw = frame.iloc[:, 4].astype(str).str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    problems = []
    for i in np.flatnonzero(keep):
        if numeric.iat[i] not in (0, 1, 2):
            problems.append(
                Problem(
                    "unknown-label",
                    where[i],
                    f"raw label {raw.iat[i]!r} (column 5) is not 0, 1 or 2; the file-name "
                    "prefix gives the label",
                )
            )
        elif int(numeric.iat[i] == 2) != labels[i]:
            other = "HP" if rule == "P" else "P"
            problems.append(
                Problem(
                    "label-mismatch",
                    where[i],
                    f"raw label {raw.iat[i]} makes it {PM_CLASS_NAMES[int(numeric.iat[i] == 2)]} "
                    f"under the original's rule (2 positive), but its prefix makes it "
                    f"{PM_CLASS_NAMES[labels[i]]} under --pm-positive {rule}; the prefix is used",
                    f"if your CSV encodes the other rule, use --pm-positive {other}",
                )
            )
    return problems


def _pm_table(names: pd.Series, labels: np.ndarray, n_rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": f"{PM_IMAGES}/" + names,
            "label": labels,
            "patient": "",
            **_original_columns(n_rows),
        }
    )


def read_ichallenge_pm(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """iChallenge-PM rows: the custom CSV's order if present, else sorted file names.

    The label comes from the file-name prefix under ``labels.pm_positive``.
    """
    positive = _pm_positive(labels)
    rule = "".join(p for p in "HP" if p in positive)
    image_dir = _pm_image_dir(root)
    files = _list_images(image_dir)
    csv_path = root / PM_CSV
    if not csv_path.is_file():
        names = pd.Series(files, dtype=str)
        where = [f"{PM_IMAGES}/{name}" for name in files]
        values, known, problems = _pm_labels(names, positive, where)
        return SourceTable(_pm_table(names, values, len(files)).loc[known], problems)
    frame = _read_csv(csv_path, 2, "ID, imgName, ... and the raw label in column 5")
    names = frame.iloc[:, 1].astype(str).str.strip()
    csv_name = Path(PM_CSV).name
    where = _row_names(csv_name, names)
    values, known, problems = _pm_labels(names, positive, where)
    duplicate, duplicates = _duplicate_problems(names, where)
    problems.extend(duplicates)
    keep = known & ~duplicate
    problems.extend(_pm_raw_problems(frame, values, keep, where, rule))
    problems.extend(_unlisted_problems(PM_IMAGES, files, set(names), csv_name))
    return SourceTable(_pm_table(names, values, len(frame)).loc[keep], problems)


# --------------------------------------------------------------------------- drawing


def amd_fundus(rng: np.random.Generator, size: int, amd: bool) -> np.ndarray:
    """A fundus with (``amd``) or without drusen at the macula, (size, size, 3) float in [0, 1].

    AMD: a cluster of yellow drusen and some mottled pigment around the macula; non-AMD
    images get at most one small druse.
    """
    fundus = draw_fundus(rng, size, right_eye=bool(rng.integers(2)))
    count = int(rng.integers(9, 15)) if amd else int(rng.integers(0, 2))
    for _ in range(count):
        centre = random_point(rng, 0.12 if amd else 0.2, fundus.macula)
        radius = rng.uniform(0.012, 0.028) if amd else 0.01
        paint(fundus, centre, radius, (0.98, 0.86, 0.42), 0.9)
    if amd:
        for _ in range(int(rng.integers(2, 5))):
            centre = random_point(rng, 0.08, fundus.macula)
            paint(fundus, centre, 0.015, (0.25, 0.1, 0.04), 0.7)
    return finish_fundus(fundus, rng)


def _tessellate(fundus: Fundus, rng: np.random.Generator, strength: float) -> None:
    """Show the choroidal vessels as a dark stripe pattern (in place), as in high myopia."""
    angle = rng.uniform(0, np.pi)
    u = fundus.xx * np.cos(angle) + fundus.yy * np.sin(angle)
    v = -fundus.xx * np.sin(angle) + fundus.yy * np.cos(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (9 * u + 0.6 * np.sin(2 * np.pi * 3 * v)))
    fundus.image[:] *= 1 - strength * stripes[..., None]


def pm_fundus(rng: np.random.Generator, size: int, prefix: str) -> np.ndarray:
    """A fundus for a PALM prefix (``N``, ``H``, ``P``), (size, size, 3) float in [0, 1].

    ``H`` (high myopia): a paler, tessellated fundus with a small peripapillary crescent;
    ``P`` (pathological myopia): stronger tessellation, a large pale atrophy around the
    disc and white patches of atrophy near the macula; ``N``: a plain fundus.
    """
    fundus = draw_fundus(rng, size, right_eye=bool(rng.integers(2)))
    if prefix in ("H", "P"):
        fundus.image[:] = 0.8 * fundus.image + 0.2 * np.array([0.95, 0.6, 0.4])
        _tessellate(fundus, rng, 0.15 if prefix == "H" else 0.25)
        radius = 0.05 if prefix == "H" else 0.1
        paint(fundus, fundus.optic, radius, (0.95, 0.85, 0.72), 0.8)
    if prefix == "P":
        for _ in range(int(rng.integers(2, 5))):
            centre = random_point(rng, 0.1, fundus.macula)
            paint(
                fundus,
                centre,
                rng.uniform(0.025, 0.045),
                (0.97, 0.93, 0.85),
            )
    return finish_fundus(fundus, rng)


# --------------------------------------------------------------------------- writing


def synth_ichallenge_amd(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` AMD (``A0001.jpg``, ...) and non-AMD (``N0001.jpg``) RGB JPEGs.

    Also writes the optional ``amd_labels.csv`` (header ``imgName,label``; rows in sorted
    file-name order, the order the reader uses without it).
    """
    rng = np.random.default_rng(options.seed)
    rows = []
    for label, prefix in ((1, "A"), (0, "N")):
        for number in range(1, options.per_class + 1):
            stem = f"{prefix}{number:04d}"
            image = amd_fundus(rng, options.size, amd=bool(label))
            write_image(image, root / _amd_path(f"{stem}.jpg", label), quality=92)
            rows.append({"imgName": stem, "label": label})
    atomic_write_text(root / AMD_CSV, pd.DataFrame(rows).to_csv(index=False))


def synth_ichallenge_pm(root: Path, options: SynthOptions) -> None:
    """``options.per_class`` RGB JPEGs for each PALM prefix N, H and P, in the doubled folder.

    No CSV (the official release has none): under the default rule the negative class
    gets the N and H images (2 x ``per_class``), the positive class the P images.
    """
    rng = np.random.default_rng(options.seed)
    for prefix in PM_PREFIXES:
        for number in range(1, options.per_class + 1):
            image = pm_fundus(rng, options.size, prefix)
            write_image(image, root / PM_IMAGES / f"{prefix}{number:04d}.jpg", quality=92)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="ichallenge_amd",
        source_url="https://amd.grand-challenge.org/",
        title="iChallenge-AMD (age-related macular degeneration)",
        aliases=("amd", "ichallenge-amd", "ichallengeamd", "adam"),
        folder="ichallenge_amd",
        class_names=AMD_CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_ichallenge_amd,
        synth=synth_ichallenge_amd,
        description="400 fundus photographs (89 AMD / 311 non-AMD) of the iChallenge-AMD "
        "(ADAM) training set; amd_labels.csv optional.",
    ),
    DatasetSpec(
        name="ichallenge_pm",
        source_url="https://palm.grand-challenge.org/",
        title="iChallenge-PM / PALM (pathological myopia)",
        aliases=("pm", "palm", "ichallenge-pm", "ichallengepm"),
        folder="ichallenge_pm",
        class_names=PM_CLASS_NAMES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_ichallenge_pm,
        synth=synth_ichallenge_pm,
        label_options=("pm_positive",),
        description="400 fundus photographs of the PALM training set (161 N / 26 H / 213 P); "
        "label from the file-name prefix, P positive (--pm-positive HP: H and P).",
    ),
)
