"""CIFAR-10 and CIFAR-100 in torchvision's published layout (the "python version" batches).

Published layout (what ``torchvision.datasets.CIFAR10/100(root, download=True)`` leaves under
the original's ``./data/CIFAR10`` / ``./data/CIFAR100``; docs/original-study.md#dataset-cifar)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Each batch is a Python 2 pickle (protocol 2) of a dict: ``data`` a (n, 3072) uint8 array
(row-major 32x32 planes R, G, B), ``labels`` (CIFAR-100: ``fine_labels``) a list of ints,
``filenames``, ``batch_label``. The files are never given to plain ``pickle.load``:
:func:`unpickle_batch` reads them with :mod:`medtransfer.safety.unpickle`, which accepts
only the few globals the format uses and rebuilds the arrays itself, so a tampered download
cannot run code.

Rows address one image inside a batch as ``cifar-10-batches-py/data_batch_3#417`` (item
417 of that file); :func:`load_cifar` decodes it. The split is the official one (50,000
train / 10,000 test), as every paper uses: ``original_split`` comes from the batch a row
is in and ``original_order`` is its index in torchvision's concatenation of that split's
batches. CIFAR has no patients: the ``patient`` policy splits by image.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable
from medtransfer.data.sources.layout import TOO_SHALLOW, Clue, layout_error, one_level_too_deep
from medtransfer.data.sources.tarball import download_tarball_folder
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.errors import DatasetError, ImageDecodeError
from medtransfer.safety.unpickle import restricted_load

IMAGE_SIDE = 32
ROW_LENGTH = 3 * IMAGE_SIDE * IMAGE_SIDE  # 3072 bytes: the R, G and B planes, row-major

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# CIFAR-100's superclasses, each with its five classes, in the order of the meta file's
# ``coarse_label_names``; ``fine_label_names`` is the alphabetical list of all 100 classes.
CIFAR100_SUPERCLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)
CIFAR100_CLASSES = tuple(sorted(name for _, names in CIFAR100_SUPERCLASSES for name in names))

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and what their dicts call things."""

    name: str
    folder: str  # the batch folder inside the dataset folder
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str
    labels_key: str
    class_names: tuple[str, ...]
    url: str
    md5: str

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files)


CIFAR10 = CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    meta_key="label_names",
    labels_key="labels",
    class_names=CIFAR10_CLASSES,
    url=CIFAR10_URL,
    md5=CIFAR10_MD5,
)
CIFAR100 = CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    meta_key="fine_label_names",
    labels_key="fine_labels",
    class_names=CIFAR100_CLASSES,
    url=CIFAR100_URL,
    md5=CIFAR100_MD5,
)

# ----------------------------------------------------------------------------- batch files


def unpickle_batch(path: Path) -> dict[str, Any]:
    """Read one CIFAR batch (or meta) file safely; a dict with ``str`` keys.

    Raises:
        DatasetError: naming the file, when it is missing, not a pickle, refers to anything
            but the allowed globals, or is not a dict.
    """
    try:
        with open(path, "rb") as handle:
            value = restricted_load(handle, encoding="latin1")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found.") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{path}: {str(exc).rstrip('.')}. A CIFAR python-version batch holds only numpy "
            "arrays, lists and strings: this file is not one, or it is corrupt; re-download the "
            "dataset."
        ) from exc
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(value).__name__}.")
    return value


@dataclass(frozen=True)
class CifarBatch:
    """One batch file: ``data`` (n, 3072) uint8, ``labels`` (n,) int64."""

    data: np.ndarray
    labels: np.ndarray


def _batch_from_dict(path: Path, entry: dict[str, Any], labels_key: str) -> CifarBatch:
    data = entry.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: 'data' is not a 2-D uint8 array.")
    if data.shape[1] != ROW_LENGTH:
        raise DatasetError(
            f"{path}: 'data' has {data.shape[1]} columns; a CIFAR image is {ROW_LENGTH} bytes."
        )
    if labels_key not in entry:
        raise DatasetError(f"{path}: no {labels_key!r} entry; found {sorted(entry)}.")
    try:
        labels = np.asarray(entry[labels_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: {labels_key!r} is not a list of integers.") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: {labels.size} labels for {data.shape[0]} images in {labels_key!r}."
        )
    return CifarBatch(data, labels)


@functools.lru_cache(maxsize=6)
def _cached_batch(path: str, size: int, mtime_ns: int, labels_key: str) -> CifarBatch:
    """Decoded batch, cached per process; ``size`` and ``mtime_ns`` key out stale copies."""
    return _batch_from_dict(Path(path), unpickle_batch(Path(path)), labels_key)


def read_batch(path: Path, labels_key: str = "labels") -> CifarBatch:
    """The images and labels of one batch file (cached by file, size and mtime)."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found.") from exc
    return _cached_batch(os.fspath(path), info.st_size, info.st_mtime_ns, labels_key)


# ----------------------------------------------------------------------------- reading


def _missing_folder_error(root: Path, layout: CifarLayout) -> DatasetError:
    folder = root / layout.folder
    first = root / layout.train_files[0]
    archive = root / layout.archive_name
    return layout_error(
        layout.name,
        folder,
        f"torchvision's layout of {layout.name} ({layout.folder}/{', '.join(layout.files)}, "
        f"{layout.meta_file})",
        Clue(first if first.is_file() else None, TOO_SHALLOW, f"move the batches into {folder}"),
        one_level_too_deep(root, layout.folder),
        Clue(
            archive if archive.is_file() else None, "it is not extracted", f"extract it in {root}"
        ),
    )


def _meta_problems(root: Path, layout: CifarLayout) -> list[Problem]:
    """Problems with the meta file: missing, unreadable, or class names that differ."""
    meta = root / layout.folder / layout.meta_file
    name = f"{layout.folder}/{layout.meta_file}"
    if not meta.is_file():
        return [Problem("missing-file", name, "class-name file missing", "re-download it")]
    try:
        names = unpickle_batch(meta).get(layout.meta_key)
    except DatasetError as exc:
        return [
            Problem.from_error("unreadable-image", name, exc, "re-download it", named=str(meta))
        ]
    if names is not None:
        names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    if names != list(layout.class_names):
        return [
            Problem(
                "label-mismatch",
                name,
                f"{layout.meta_key} is {names!r}, expected {list(layout.class_names)!r}",
                "the folder may hold another CIFAR variant; re-download it",
            )
        ]
    return []


def _batch_rows(root: Path, layout: CifarLayout, file: str, split: str, start: int) -> pd.DataFrame:
    path = root / layout.folder / file
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: every batch of {layout.name} is needed ({', '.join(layout.files)}"
            f" in {root / layout.folder}); re-download or re-extract the dataset."
        )
    labels = read_batch(path, layout.labels_key).labels
    bad = np.flatnonzero((labels < 0) | (labels >= len(layout.class_names)))
    if bad.size:
        raise DatasetError(
            f"{path}: item {bad[0]} has label {labels[bad[0]]}, outside 0.."
            f"{len(layout.class_names) - 1} ({bad.size} such items)."
        )
    n = len(labels)
    return pd.DataFrame(
        {
            "path": [f"{layout.folder}/{file}#{i}" for i in range(n)],
            "label": labels,
            "patient": "",
            "original_split": split,
            "original_order": np.arange(start, start + n),
        }
    )


def read_cifar(root: Path, layout: CifarLayout) -> SourceTable:
    """Rows of every batch, train batches first, in torchvision's order; opens the batches."""
    if not (root / layout.folder).is_dir():
        raise _missing_folder_error(root, layout)
    frames: list[pd.DataFrame] = []
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        start = 0
        for file in files:
            frames.append(_batch_rows(root, layout, file, split, start))
            start += len(frames[-1])
    table = pd.concat(frames, ignore_index=True)
    problems = _meta_problems(root, layout)
    counts = np.bincount(table["label"].to_numpy(), minlength=len(layout.class_names))
    problems.extend(
        Problem("empty-class", f"{layout.folder}", f"no image of class {layout.class_names[c]}")
        for c in np.flatnonzero(counts == 0)
    )
    return SourceTable(table, problems)


def read_cifar10(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """CIFAR-10: 50,000 train (data_batch_1..5) and 10,000 test images, 10 classes."""
    return read_cifar(root, CIFAR10)


def read_cifar100(root: Path, labels: LabelOptions | None = None) -> SourceTable:
    """CIFAR-100: 50,000 train and 10,000 test images, 100 (fine) classes."""
    return read_cifar(root, CIFAR100)


# ----------------------------------------------------------------------------- decoding


def _split_item(path: Path) -> tuple[Path, int]:
    text = os.fspath(path)
    file, sep, key = text.rpartition("#")
    if not sep or not key.isdigit():
        raise ImageDecodeError.of(
            path,
            "a CIFAR item is addressed as <batch file>#<index>, e.g. "
            "cifar-10-batches-py/data_batch_3#417",
        )
    return Path(file), int(key)


def _labels_key(file: Path) -> str:
    return "fine_labels" if file.parent.name == CIFAR100.folder else "labels"


def cifar_array(path: Path) -> np.ndarray:
    """The image at ``<batch file>#<index>``: (32, 32, 3) uint8, HWC, RGB."""
    file, index = _split_item(Path(path))
    try:
        batch = read_batch(file, _labels_key(file))
    except DatasetError as exc:
        problem = Problem.from_error("", str(path), exc, "re-download the dataset", named=str(file))
        raise ImageDecodeError.of(path, problem.detail, problem.fix) from exc
    if index >= len(batch.data):
        raise ImageDecodeError.of(path, f"{file.name} holds only {len(batch.data)} images")
    planes = batch.data[index].reshape(3, IMAGE_SIDE, IMAGE_SIDE)
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def load_cifar(path: Path) -> Image.Image:
    """Decode ``<batch file>#<index>`` to a 32x32 RGB image.

    Raises:
        ImageDecodeError: naming the item (bad address, missing or unsafe file, no such index).
    """
    return Image.fromarray(cifar_array(path))


# ----------------------------------------------------------------------------- download


def download_cifar(
    root: Path, layout: CifarLayout, *, progress: bool = True, url: str = "", md5: str = ""
) -> Path:
    """Download and extract ``layout`` into ``root``; returns ``root`` (the dataset folder).

    ``url`` and ``md5`` default to the published ones; see
    :func:`medtransfer.data.sources.tarball.download_tarball_folder`.
    """
    return download_tarball_folder(
        root,
        url=url or layout.url,
        md5=md5 or layout.md5,
        archive_name=layout.archive_name,
        folder=layout.folder,
        files=layout.files,
        progress=progress,
    )


def download_cifar10(
    root: Path, *, progress: bool = True, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5
) -> Path:
    """Download CIFAR-10 (python version) into ``root``; see :func:`download_cifar`."""
    return download_cifar(root, CIFAR10, progress=progress, url=url, md5=md5)


def download_cifar100(
    root: Path, *, progress: bool = True, url: str = CIFAR100_URL, md5: str = CIFAR100_MD5
) -> Path:
    """Download CIFAR-100 (python version) into ``root``; see :func:`download_cifar`."""
    return download_cifar(root, CIFAR100, progress=progress, url=url, md5=md5)


SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="cifar10",
        download=lambda folder, progress: download_cifar10(folder, progress=progress),
        source_url=CIFAR10_URL,
        title="CIFAR-10",
        aliases=("cifar-10", "cifar_10"),
        folder="CIFAR10",
        class_names=CIFAR10_CLASSES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_cifar10,
        load=load_cifar,
        description=(
            "60,000 32x32 natural images in 10 classes (official 50,000 train / 10,000 test); "
            "the study's non-medical reference."
        ),
    ),
    DatasetSpec(
        name="cifar100",
        download=lambda folder, progress: download_cifar100(folder, progress=progress),
        source_url=CIFAR100_URL,
        title="CIFAR-100",
        aliases=("cifar-100", "cifar_100"),
        folder="CIFAR100",
        class_names=CIFAR100_CLASSES,
        metric=ACCURACY,
        patients="",
        few_shot_resize="square",
        read=read_cifar100,
        load=load_cifar,
        description="60,000 32x32 natural images in 100 classes (official 50,000 / 10,000).",
    ),
)
