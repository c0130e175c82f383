"""CIFAR-10 and CIFAR-100 in torchvision's published layout (the "python version" batches).

Published layout (what ``torchvision.datasets.CIFAR10/100(root, download=True)`` leaves under
the original's ``./data/CIFAR10`` / ``./data/CIFAR100``; spec/datasets-and-models.md §1.4)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Each batch is a Python 2 pickle (protocol 2) of a dict: ``data`` a (n, 3072) uint8 array
(row-major 32x32 planes R, G, B), ``labels`` (CIFAR-100: ``fine_labels``) a list of ints,
``filenames``, ``batch_label``. The files are never given to plain ``pickle.load``:
:class:`BatchUnpickler` accepts only the few globals the format uses and rebuilds the
arrays itself, so a tampered download cannot run code.

Rows address one image inside a batch as ``cifar-10-batches-py/data_batch_3#417`` (item
417 of that file); :func:`load_cifar` decodes it. The split is the official one (50,000
train / 10,000 test), as every paper uses: ``original_split`` comes from the batch a row
is in and ``original_order`` is its index in torchvision's concatenation of that split's
batches. CIFAR has no patients: the ``patient`` policy splits by image.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.data.sources.base import LabelOptions, Problem, SourceTable
from medtransfer.data.spec import ACCURACY, DatasetSpec
from medtransfer.data.synthetic import SynthOptions, class_pattern
from medtransfer.download import fetch
from medtransfer.errors import DatasetError, DownloadError, ImageDecodeError
from medtransfer.fsutil import atomic_write_bytes

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
LAYOUTS = (CIFAR10, CIFAR100)


# ----------------------------------------------------------------------------- unpickling

_PLAIN_DTYPES = frozenset("biuf")  # bool, signed, unsigned, float: no objects, no records


class _DtypeStub:
    """Stands in for ``numpy.dtype(spec, align, copy)`` while a batch is unpickled."""

    def __init__(self, spec: Any = None, *_: Any) -> None:
        self.spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1:
            order = state[1]
            self.byteorder = order.decode("latin1") if isinstance(order, bytes) else str(order)
            if any(part is not None for part in state[2:5]):
                raise pickle.UnpicklingError("refusing a structured or sub-array dtype")

    def resolve(self) -> np.dtype:
        """The plain numeric dtype described; anything else is refused."""
        if not isinstance(self.spec, str) or self.byteorder not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"refusing dtype {self.spec!r}")
        try:
            dtype = np.dtype(self.spec)
        except TypeError as exc:
            raise pickle.UnpicklingError(f"refusing dtype {self.spec!r}") from exc
        if dtype.kind not in _PLAIN_DTYPES or dtype.fields is not None or dtype.subdtype:
            raise pickle.UnpicklingError(f"refusing non-numeric dtype {self.spec!r}")
        if self.byteorder in ("<", ">") and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


class _ArrayStub:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, ...)``.

    Its ``__setstate__`` receives numpy's pickled state ``(version, shape, dtype, fortran,
    raw bytes)`` and builds the array with ``np.frombuffer``: numpy's own unpickling code
    never sees the file's bytes.
    """

    def __init__(self, cls: Any = None, *_: Any) -> None:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}, not numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected numpy array state")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise pickle.UnpicklingError("numpy array state without a plain dtype")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"unexpected numpy array shape {shape!r}")
        resolved = dtype.resolve()
        if isinstance(raw, str):  # a Python 2 str read with encoding="latin1"
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes | bytearray):
            raise pickle.UnpicklingError("numpy array data is not a byte string")
        count = int(np.prod(shape, dtype=np.int64))
        if len(raw) != count * resolved.itemsize:
            raise pickle.UnpicklingError(
                f"numpy array data holds {len(raw)} bytes, shape {shape} needs "
                f"{count * resolved.itemsize}"
            )
        flat = np.frombuffer(raw, dtype=resolved, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy()


def _latin1_encode(text: Any, encoding: Any = "latin1", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol 2, latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than latin1 text")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as Python 3 pickles ``b""`` at protocol 2; any argument is refused."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


# (module, name) -> what it resolves to. The real batches (Python 2, numpy 1.x) name
# numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype; numpy 2 writes
# numpy._core.multiarray; Python 3 at protocol 2 spells bytes as _codecs.encode(..., latin1)
# and b"" as __builtin__.bytes().
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _latin1_encode,
}


class BatchUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that only builds dicts, lists, strings, ints and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` naming it and the file. Python 2 strings are read as
    ``latin1`` (what torchvision does), so the real files' dict keys come back as ``str``.
    """

    def __init__(self, handle: io.BufferedIOBase, source: Path) -> None:
        super().__init__(handle, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load the global {module}.{name}; a CIFAR batch "
                "holds only numpy arrays, lists and strings"
            )
        return target


def _plain(value: Any) -> Any:
    """Replace array stand-ins by their arrays; decode bytes keys (Python 3 pickles)."""
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise pickle.UnpicklingError("numpy array without data")
        return value.array
    if isinstance(value, dict):
        return {
            (k.decode("latin1") if isinstance(k, bytes) else k): _plain(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def unpickle_batch(path: Path) -> dict[str, Any]:
    """Read one CIFAR batch (or meta) file safely; a dict with ``str`` keys.

    Raises:
        DatasetError: naming the file, when it is missing, not a pickle, refers to anything
            but the allowed globals, or is not a dict.
    """
    try:
        with open(path, "rb") as handle:
            value = _plain(BatchUnpickler(handle, Path(path)).load())
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found.") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise DatasetError(
            f"{message}. It is not a CIFAR python-version batch file, or it is corrupt; "
            "re-download the dataset."
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
    hint = ""
    deeper = sorted(p for p in root.glob(f"*/{layout.folder}") if p.is_dir())
    if (root / layout.train_files[0]).is_file():
        hint = (
            f" {root / layout.train_files[0]} exists: the batches are one level too shallow; "
            f"move them into {folder}."
        )
    elif deeper:
        hint = (
            f" {deeper[0]} exists: the dataset is one level too deep; move {layout.folder} up "
            f"into {root}."
        )
    elif (root / layout.archive_name).is_file():
        hint = f" {root / layout.archive_name} exists: extract it in {root}."
    return DatasetError(
        f"{folder} not found: expected torchvision's layout of {layout.name} "
        f"({layout.folder}/{', '.join(layout.files)}, {layout.meta_file}).{hint} Run "
        f"`medtransfer datasets synth --dataset {layout.name} --out DIR` to see the layout."
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
        return [Problem("unreadable-image", name, str(exc), "re-download it")]
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
        raise ImageDecodeError(
            f"{path}: a CIFAR item is addressed as <batch file>#<index>, e.g. "
            "cifar-10-batches-py/data_batch_3#417."
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
        raise ImageDecodeError(str(exc)) from exc
    if index >= len(batch.data):
        raise ImageDecodeError(f"{path}: {file.name} holds only {len(batch.data)} images.")
    planes = batch.data[index].reshape(3, IMAGE_SIDE, IMAGE_SIDE)
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def load_cifar(path: Path) -> Image.Image:
    """Decode ``<batch file>#<index>`` to a 32x32 RGB image.

    Raises:
        ImageDecodeError: naming the item (bad address, missing or unsafe file, no such index).
    """
    return Image.fromarray(cifar_array(path))


# ----------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_members(archive: Path, tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    """Every member, checked: no absolute path, no ``..``, no link or device, inside ``prefix``."""
    members = tar.getmembers()
    for member in members:
        name = PurePosixPath(member.name)
        culprit = ""
        if not name.parts:
            culprit = "an empty path"
        elif member.name.startswith(("/", "\\")) or name.is_absolute() or ":" in name.parts[0]:
            culprit = "an absolute path"
        elif ".." in name.parts:
            culprit = "a '..' component"
        elif not (member.isfile() or member.isdir()):
            culprit = "a link or special file"
        elif name.parts[0] != prefix:
            culprit = f"a path outside {prefix}/"
        if culprit:
            raise DownloadError(
                f"{archive}: member {member.name!r} has {culprit}; refusing to extract the "
                "archive. Delete it and download it again from the official site."
            )
    return members


def _extract(archive: Path, dest: Path, prefix: str) -> None:
    """Extract ``prefix/`` of ``archive`` to ``dest/prefix`` atomically (temp dir + rename)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".tmp", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in _safe_members(archive, tar, prefix):
                    target = staging.joinpath(*PurePosixPath(member.name).parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    if source is None:
                        raise DownloadError(f"{archive}: member {member.name!r} has no data.")
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DownloadError(
                f"{archive}: cannot be extracted ({exc}); delete it and download it again."
            ) from exc
        extracted = staging / prefix
        if not extracted.is_dir():
            raise DownloadError(f"{archive}: holds no {prefix}/ folder.")
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(extracted, dest / prefix)
        if not (dest / prefix).is_dir():
            raise DownloadError(f"could not move the extracted {prefix} into {dest}.")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_cifar(
    root: Path, layout: CifarLayout, *, progress: bool = True, url: str = "", md5: str = ""
) -> Path:
    """Download and extract ``layout`` into ``root``; returns ``root`` (the dataset folder).

    The archive is fetched (resumable, sha256 recorded beside it by
    :func:`medtransfer.download.fetch`) into ``root``, its md5 checked against ``md5``
    (default: the published one), then ``layout.folder`` extracted safely and atomically.
    ``root`` is chosen by the caller: a cache folder, never the user's data root. A complete
    folder already there is returned without touching the network.
    """
    root = Path(root)
    folder = root / layout.folder
    if all((folder / name).is_file() for name in layout.files):
        return root
    if folder.exists() and any(folder.iterdir()):
        raise DownloadError(
            f"{folder} exists but lacks some of {', '.join(layout.files)}; delete it and run "
            "again to download and extract it afresh."
        )
    archive = fetch(url or layout.url, root / layout.archive_name, progress=progress)
    expected = (md5 or layout.md5).lower()
    actual = _md5(archive)
    if actual != expected:
        archive.unlink(missing_ok=True)
        archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
        raise DownloadError(
            f"{archive} failed its md5 check: expected {expected}, got {actual}; it was deleted. "
            f"Run again to download {url or layout.url} afresh."
        )
    _extract(archive, root, layout.folder)
    return root


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


# ----------------------------------------------------------------------------- writing


class Py2Pickle:
    """Writes pickles opcode by opcode the way Python 2's cPickle wrote the CIFAR batches.

    Protocol 2; ``str`` values become Python 2 byte strings (``SHORT_BINSTRING`` /
    ``BINSTRING``), so torchvision's ``pickle.load(f, encoding="latin1")`` reads ``str``
    keys and :class:`BatchUnpickler` reads them too; numpy arrays are spelled as numpy
    1.x did (``numpy.core.multiarray._reconstruct``, dtype state version 3).
    """

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")  # PROTO 2

    def string(self, value: str | bytes) -> None:
        data = value.encode("latin1") if isinstance(value, str) else value
        if len(data) < 256:
            self.out.write(b"U" + bytes([len(data)]) + data)  # SHORT_BINSTRING
        else:
            self.out.write(b"T" + len(data).to_bytes(4, "little") + data)  # BINSTRING

    def integer(self, value: int) -> None:
        if 0 <= value < 256:
            self.out.write(b"K" + bytes([value]))  # BININT1
        elif 0 <= value < 65536:
            self.out.write(b"M" + value.to_bytes(2, "little"))  # BININT2
        else:
            self.out.write(b"J" + value.to_bytes(4, "little", signed=True))  # BININT

    def value(self, value: Any) -> None:
        if isinstance(value, bool):
            self.out.write(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, str | bytes):
            self.string(value)
        elif isinstance(value, list):
            self.out.write(b"]")  # EMPTY_LIST
            for start in range(0, len(value), 1000):  # cPickle batched APPENDS by 1000
                self.out.write(b"(")
                for item in value[start : start + 1000]:
                    self.value(item)
                self.out.write(b"e")
        elif isinstance(value, dict):
            self.out.write(b"}(")  # EMPTY_DICT, MARK
            for key, item in value.items():
                self.value(key)
                self.value(item)
            self.out.write(b"u")  # SETITEMS
        elif isinstance(value, np.ndarray):
            self.array(value)
        else:
            raise TypeError(f"cannot write {type(value).__name__} in a CIFAR batch")

    def array(self, array: np.ndarray) -> None:
        if array.dtype != np.uint8:
            raise TypeError("CIFAR batches hold uint8 arrays")
        array = np.ascontiguousarray(array)
        self.out.write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
        self.out.write(b"K\x00\x85")  # (0,)
        self.string("b")
        self.out.write(b"\x87R(")  # TUPLE3, REDUCE, MARK (array state)
        self.integer(1)
        for n in array.shape:
            self.integer(int(n))
        self.out.write({1: b"\x85", 2: b"\x86", 3: b"\x87"}[array.ndim])
        self.out.write(b"cnumpy\ndtype\n")
        self.string("u1")
        self.out.write(b"K\x00K\x01\x87R(K\x03")  # ('u1', 0, 1), REDUCE, MARK, version 3
        self.string("|")
        self.out.write(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # ..., -1, -1, 0
        self.out.write(b"\x89")  # not Fortran order
        self.string(array.tobytes())
        self.out.write(b"tb")  # TUPLE, BUILD

    def getvalue(self) -> bytes:
        return self.out.getvalue() + b"."  # STOP


def py2_pickle(value: dict[str, Any]) -> bytes:
    """``value`` as Python 2's cPickle (protocol 2) wrote it; see :class:`Py2Pickle`."""
    writer = Py2Pickle()
    writer.value(value)
    return writer.getvalue()


def _synth_assignment(
    rng: np.random.Generator, per_class: int, n_classes: int, n_train_files: int
) -> list[list[int]]:
    """Labels per file (train files first, then the test file), classes spread over them.

    Each class puts about a sixth of its images (at least one when it has two or more) in the
    test file and deals the rest over the train files; every file is then shuffled.
    """
    files: list[list[int]] = [[] for _ in range(n_train_files + 1)]
    n_test = max(1, per_class // 6) if per_class >= 2 else 0
    for label in range(n_classes):
        files[-1].extend([label] * n_test)
        for j in range(per_class - n_test):
            files[(j + label) % n_train_files].append(label)
    return [list(rng.permutation(np.asarray(labels, dtype=np.int64))) for labels in files]


def _synth_batch(
    rng: np.random.Generator,
    labels: list[int],
    layout: CifarLayout,
    batch_label: str,
    serial: list[int],
) -> dict[str, Any]:
    n_classes = len(layout.class_names)
    rows = np.zeros((len(labels), ROW_LENGTH), dtype=np.uint8)
    names = []
    for i, label in enumerate(labels):
        image = class_pattern(rng, IMAGE_SIDE, int(label), n_classes)  # (32, 32, 3) in [0, 1]
        pixels = np.round(image * 255).astype(np.uint8)
        rows[i] = pixels.transpose(2, 0, 1).reshape(-1)  # HWC -> R, G, B planes
        serial[0] += 1
        names.append(f"{layout.class_names[label]}_s_{serial[0]:06d}.png")
    entry: dict[str, Any] = {"batch_label": batch_label, "data": rows}
    int_labels = [int(x) for x in labels]
    if layout is CIFAR100:
        coarse = {n: c for c, (_, fine) in enumerate(CIFAR100_SUPERCLASSES) for n in fine}
        entry["fine_labels"] = int_labels
        entry["coarse_labels"] = [coarse[layout.class_names[x]] for x in int_labels]
    else:
        entry["labels"] = int_labels
    entry["filenames"] = names
    return entry


def _synth_meta(layout: CifarLayout, per_batch: int) -> dict[str, Any]:
    if layout is CIFAR100:
        return {
            "fine_label_names": list(CIFAR100_CLASSES),
            "coarse_label_names": [name for name, _ in CIFAR100_SUPERCLASSES],
        }
    return {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}


def synth_cifar(root: Path, options: SynthOptions, layout: CifarLayout) -> None:
    """Write ``layout`` under ``root``: the exact Python 2 pickle format, 32x32 images.

    ``options.per_class`` images per class spread over the train files and the test file;
    ``options.size`` is ignored (the format fixes 32x32). Each class has its own stripe
    pattern and tint (:func:`medtransfer.data.synthetic.class_pattern`).
    """
    rng = np.random.default_rng(options.seed)
    n_classes = len(layout.class_names)
    assignment = _synth_assignment(rng, options.per_class, n_classes, len(layout.train_files))
    serial = [0]
    for index, (file, labels) in enumerate(zip(layout.files, assignment, strict=True)):
        if file in layout.test_files:
            batch_label = "testing batch 1 of 1"
        else:
            batch_label = f"training batch {index + 1} of {len(layout.train_files)}"
        entry = _synth_batch(rng, labels, layout, batch_label, serial)
        atomic_write_bytes(root / layout.folder / file, py2_pickle(entry))
    per_batch = max(len(labels) for labels in assignment)
    meta = py2_pickle(_synth_meta(layout, per_batch))
    atomic_write_bytes(root / layout.folder / layout.meta_file, meta)


def synth_cifar10(root: Path, options: SynthOptions) -> None:
    """CIFAR-10 layout (``cifar-10-batches-py``); see :func:`synth_cifar`."""
    synth_cifar(root, options, CIFAR10)


def synth_cifar100(root: Path, options: SynthOptions) -> None:
    """CIFAR-100 layout (``cifar-100-python``); see :func:`synth_cifar`."""
    synth_cifar(root, options, CIFAR100)


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
        synth=synth_cifar10,
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
        synth=synth_cifar100,
        load=load_cifar,
        description="60,000 32x32 natural images in 100 classes (official 50,000 / 10,000).",
    ),
)
