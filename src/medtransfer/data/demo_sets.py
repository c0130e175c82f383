"""A small labelled set of real medical pixels for the offline demo (modality recognition).

No labelled medical dataset ships in any installable package, but single real images
do: a CR chest radiograph, CT and MR slices (pydicom, pydicom-data), a fundus photograph
and an IHC histology field (scikit-image). :func:`build_modality_patches` cuts seeded
random patches from them and writes a folder::

    out_dir/
      labels.csv                         # path,label,patient (path relative to out_dir)
      images/<class>/<source>_<k>.png    # 8-bit RGB, patch_size x patch_size
      SOURCES.txt                        # provenance and licence of every source image
      manifest.json                      # build parameters and file sizes (reuse check)

``patient`` is the source image id, so patient-aware splits keep all patches of one
image on one side. Classes with a single source image therefore cannot be split by
patient; that is a property of the toy, stated in :data:`DEMO_SET_DESCRIPTION`.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medtransfer.data.images import to_uint8
from medtransfer.errors import ConfigError, DatasetError
from medtransfer.fsutil import atomic_directory

__all__ = [
    "DEMO_CLASSES",
    "DEMO_SET_DESCRIPTION",
    "DEMO_SOURCES",
    "DemoSource",
    "build_modality_patches",
]

#: Bump when the output of a given (patch_size, per_image, seed) changes.
FORMAT_VERSION = 1

#: Written into manifest.json; only folders carrying it are ever replaced.
_BUILDER = "medtransfer.data.demo_sets"

#: Class names, in label order.
DEMO_CLASSES: tuple[str, ...] = ("chest_xray", "fundus", "histology", "ct", "mr")

DEMO_SET_DESCRIPTION: str = (
    "A modality-recognition toy, not a clinical benchmark: five classes (chest X-ray, "
    "fundus photograph, histology, CT, MR) cut as random patches from six real medical "
    "images that ship inside Python packages (pydicom, pydicom-data, scikit-image), one "
    "or two images per class. Every class has the same number of patches, and the "
    "'patient' column is the source image, so patches of one image stay together in "
    "patient-aware splits; classes with a single source image cannot be split by "
    "patient at all, and patches from one image overlap. It shows, offline and in "
    "seconds, whether ImageNet pretraining separates imaging modalities better than the "
    "same network randomly initialised; it says nothing about diagnostic performance, and "
    "its accuracy (and the interval beside it, over episodes only) must "
    "never be reported as a medical result."
)

#: Patch sources are downscaled so that their shorter side is this many patch sizes.
_SHORT_SIDE_IN_PATCHES = 3.5
#: Small sources are upscaled only as far as this many patch sizes (room for crops).
_MIN_SHORT_SIDE_IN_PATCHES = 1.5
#: A pixel is "dark" when its brightest channel is below this value.
_DARK_LEVEL = 16
#: A pixel is "blown out" when its darkest channel is above this value.
_BRIGHT_LEVEL = 240
#: Reject a patch when more than this fraction of its pixels is dark (e.g. the black
#: surround of the fundus disc, MR background).
_MAX_DARK_FRACTION = 0.25
#: Reject a patch when more than this fraction of its pixels is blown out.
_MAX_BRIGHT_FRACTION = 0.5
#: Reject a patch whose gray-level standard deviation is below this (flat background).
_MIN_STD = 6.0
#: Give up after this many candidate crops per requested patch.
_ATTEMPTS_PER_PATCH = 50


@dataclass(frozen=True)
class DemoSource:
    """One shipped source image and how it becomes patches.

    Attributes:
        source_id: short id, used as the ``patient`` column and in file names.
        label: class name (one of :data:`DEMO_CLASSES`).
        package: the installed distribution the image ships in.
        file: the file (or loader function) inside the package.
        modality: what the image is, in words.
        licence: licence of the image (and of the package that ships it).
        content: what the patches show and how pixels were mapped to 8 bits.
        load: returns the display-ready image, ``(H, W)`` or ``(H, W, 3)`` ``uint8``.
    """

    source_id: str
    label: str
    package: str
    file: str
    modality: str
    licence: str
    content: str
    load: Callable[[], np.ndarray]


def _dicom_file(name: str, package: str) -> Path:
    """Path of a pydicom test file, without any download; DatasetError if absent."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        raise DatasetError(
            f"{name}: DICOM test image for the demo set is not installed; "
            f"install it with `pip install {package}` (no download happens at run time)"
        )
    return Path(str(found))


def _dicom_uint8(name: str, package: str) -> np.ndarray:
    """Read a single-frame DICOM: rescale slope/intercept, invert MONOCHROME1, range-scale.

    Returns:
        ``(H, W)`` ``uint8``, bright = high signal in the display convention.
    """
    import pydicom

    path = _dicom_file(name, package)
    try:
        ds = pydicom.dcmread(path)
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise DatasetError(
            f"{path}: cannot decode this DICOM demo image ({exc}); reinstall {package}"
        ) from exc
    if pixels.ndim != 2:
        raise DatasetError(
            f"{path}: expected a single-frame grayscale DICOM, got pixel shape "
            f"{pixels.shape}; reinstall {package}"
        )
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    values = pixels * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = values.max() + values.min() - values
    return to_uint8(values)


def _skimage_image(name: str) -> np.ndarray:
    """A picture shipped in ``skimage.data``: ``(H, W)`` or ``(H, W, 3)`` ``uint8``."""
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:
        array = to_uint8(array)
    return array


DEMO_SOURCES: tuple[DemoSource, ...] = (
    DemoSource(
        source_id="rg1",
        label="chest_xray",
        package="pydicom-data",
        file="RG1_UNCR.dcm",
        modality="CR chest radiograph, PA (1955x1841, 15-bit, MONOCHROME1)",
        licence="NEMA DICOM WG-04 public compression test image; pydicom-data is MIT",
        content="crops of the chest film; MONOCHROME1 inverted, range-scaled to 8 bits",
        load=lambda: _dicom_uint8("RG1_UNCR.dcm", "pydicom-data"),
    ),
    DemoSource(
        source_id="retina",
        label="fundus",
        package="scikit-image",
        file="skimage.data.retina()",
        modality="colour fundus photograph of a normal left eye (1411x1411 RGB)",
        licence="CC0 1.0 (M. Haggstrom, Wikimedia Commons); scikit-image is BSD-3",
        content="crops inside the fundus disc (black surround rejected), RGB as shipped",
        load=lambda: _skimage_image("retina"),
    ),
    DemoSource(
        source_id="ihc",
        label="histology",
        package="scikit-image",
        file="skimage.data.immunohistochemistry()",
        modality="IHC (DAB + hematoxylin) of colonic glands (512x512 RGB)",
        licence="no known copyright restrictions (CMMI); scikit-image is BSD-3",
        content="crops of the stained tissue, RGB as shipped",
        load=lambda: _skimage_image("immunohistochemistry"),
    ),
    DemoSource(
        source_id="ct_small",
        label="ct",
        package="pydicom",
        file="CT_small.dcm",
        modality="axial CT at a thoracic vertebra (128x128, downsized from NEMA WG-04 CT1)",
        licence="NEMA DICOM WG-04 test image (via pydicom test files); pydicom is MIT",
        content="crops after RescaleSlope/Intercept (HU), HU range-scaled to 8 bits, upscaled",
        load=lambda: _dicom_uint8("CT_small.dcm", "pydicom"),
    ),
    DemoSource(
        source_id="mr2",
        label="mr",
        package="pydicom-data",
        file="MR2_UNCR.dcm",
        modality="shoulder MR, coronal (1024x1024, 16-bit)",
        licence="NEMA DICOM WG-04 public compression test image; pydicom-data is MIT",
        content="crops of the shoulder (black background rejected), range-scaled to 8 bits",
        load=lambda: _dicom_uint8("MR2_UNCR.dcm", "pydicom-data"),
    ),
    DemoSource(
        source_id="mr_small",
        label="mr",
        package="pydicom",
        file="MR_small.dcm",
        modality="MR slice (64x64, downsized from NEMA WG-04 MR1)",
        licence="NEMA DICOM WG-04 test image (via pydicom test files); pydicom is MIT",
        content="crops of the slice, range-scaled to 8 bits, upscaled (small source)",
        load=lambda: _dicom_uint8("MR_small.dcm", "pydicom"),
    ),
)


def _validate(patch_size: int, per_image: int, seed: int) -> None:
    """ConfigError for parameters the builder cannot honour."""
    checks = (
        ("patch_size", patch_size, 16, 512),
        ("per_image", per_image, 1, 1000),
        ("seed", seed, 0, 2**63 - 1),
    )
    for name, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(
                f"demo set: {name}={value!r} is invalid; use an integer from {lo} to {hi}"
            )


def _resized_rgb(array: np.ndarray, patch_size: int) -> np.ndarray:
    """Resize a source so a patch covers a meaningful area; return RGB.

    Large sources are downscaled so their shorter side is ``3.5 * patch_size``; small
    ones are upscaled only to ``1.5 * patch_size`` (never beyond what cropping needs).

    Args:
        array: ``(H, W)`` or ``(H, W, 3)`` ``uint8``.

    Returns:
        ``(H', W', 3)`` ``uint8``.
    """
    img = Image.fromarray(array)
    short = min(img.size)
    target = round(_SHORT_SIDE_IN_PATCHES * patch_size)
    if short < target:
        target = max(short, math.ceil(_MIN_SHORT_SIDE_IN_PATCHES * patch_size))
    if target != short:
        scale = target / short
        if img.width <= img.height:
            size = (target, round(img.height * scale))
        else:
            size = (round(img.width * scale), target)
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img.convert("RGB"))


def _informative(patch: np.ndarray) -> bool:
    """False for near-empty patches: largely black, largely blown out, or flat.

    Args:
        patch: ``(p, p, 3)`` ``uint8``.
    """
    dark = float((patch.max(axis=-1) < _DARK_LEVEL).mean())
    bright = float((patch.min(axis=-1) > _BRIGHT_LEVEL).mean())
    flat = float(patch.mean(axis=-1).std()) < _MIN_STD
    return dark <= _MAX_DARK_FRACTION and bright <= _MAX_BRIGHT_FRACTION and not flat


def _cut_patches(
    source: DemoSource, image: np.ndarray, count: int, patch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Seeded random crops of ``image`` (``(H, W, 3)`` uint8), near-empty ones skipped.

    Returns:
        ``count`` arrays of shape ``(patch_size, patch_size, 3)`` ``uint8``.
    """
    height, width = image.shape[:2]
    patches: list[np.ndarray] = []
    for _ in range(count * _ATTEMPTS_PER_PATCH):
        top = int(rng.integers(0, height - patch_size + 1))
        left = int(rng.integers(0, width - patch_size + 1))
        patch = image[top : top + patch_size, left : left + patch_size]
        if _informative(patch):
            patches.append(np.ascontiguousarray(patch))
            if len(patches) == count:
                return patches
    raise DatasetError(
        f"{source.file}: only {len(patches)} of {count} non-empty {patch_size}px patches "
        "could be cut from this demo source; use a smaller patch_size"
    )


def _png_bytes(patch: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` ``uint8`` array as a metadata-free PNG."""
    buffer = io.BytesIO()
    Image.fromarray(patch, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _patch_counts(per_image: int) -> dict[str, int]:
    """Patches per source: every class gets ``per_image`` x (most sources in any class)."""
    by_class: dict[str, list[DemoSource]] = {label: [] for label in DEMO_CLASSES}
    for source in DEMO_SOURCES:
        by_class[source.label].append(source)
    per_class = per_image * max(len(sources) for sources in by_class.values())
    counts: dict[str, int] = {}
    for sources in by_class.values():
        base, extra = divmod(per_class, len(sources))
        for index, source in enumerate(sources):
            counts[source.source_id] = base + (1 if index < extra else 0)
    return counts


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _sources_text(counts: dict[str, int], patch_size: int) -> str:
    """The SOURCES.txt body: description, then one block per source image."""
    lines = ["Demo set: modality patches from real medical images shipped in packages", ""]
    lines += [DEMO_SET_DESCRIPTION, ""]
    for source in DEMO_SOURCES:
        lines += [
            f"{source.source_id} -> {source.label} ({counts[source.source_id]} patches, "
            f"{patch_size}x{patch_size} RGB PNG)",
            f"  package:  {source.package} {_package_version(source.package)}",
            f"  file:     {source.file}",
            f"  modality: {source.modality}",
            f"  licence:  {source.licence}",
            f"  patches:  {source.content}",
            "",
        ]
    return "\n".join(lines)


def _params(patch_size: int, per_image: int, seed: int) -> dict[str, object]:
    return {
        "format": FORMAT_VERSION,
        "patch_size": patch_size,
        "per_image": per_image,
        "seed": seed,
        "sources": [source.source_id for source in DEMO_SOURCES],
    }


def _read_manifest(folder: Path) -> dict[str, object] | None:
    """The folder's manifest.json if this module wrote it, else None."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("builder") != _BUILDER:
        return None
    return manifest


def _is_complete(folder: Path, params: dict[str, object]) -> bool:
    """True when ``folder`` holds every file of a set built with ``params``."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("params") != params:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for relative, size in files.items():
        path = folder / relative
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _write_set(folder: Path, patch_size: int, per_image: int, seed: int) -> None:
    """Write the whole set into the (empty, temporary) ``folder``."""
    counts = _patch_counts(per_image)
    files: dict[str, int] = {}
    rows: list[tuple[str, str, str]] = []

    def write(relative: str, data: bytes) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[relative] = len(data)

    for index, source in enumerate(DEMO_SOURCES):
        rng = np.random.default_rng([seed, index])
        image = _resized_rgb(source.load(), patch_size)
        patches = _cut_patches(source, image, counts[source.source_id], patch_size, rng)
        for k, patch in enumerate(patches):
            relative = f"images/{source.label}/{source.source_id}_{k:03d}.png"
            write(relative, _png_bytes(patch))
            rows.append((relative, source.label, source.source_id))

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("path", "label", "patient"))
    writer.writerows(rows)
    write("labels.csv", table.getvalue().encode("utf-8"))
    write("SOURCES.txt", _sources_text(counts, patch_size).encode("utf-8"))
    manifest = {
        "builder": _BUILDER,
        "params": _params(patch_size, per_image, seed),
        "files": files,
    }
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (folder / "manifest.json").write_text(manifest_text, encoding="utf-8")


def build_modality_patches(
    out_dir: Path, *, patch_size: int = 96, per_image: int = 12, seed: int = 0
) -> Path:
    """Build (or reuse) the demo modality-patch set in ``out_dir``; return ``out_dir``.

    Every class in :data:`DEMO_CLASSES` gets ``per_image`` x (the largest number of
    source images in any class) patches, 24 per class with the defaults; a class with
    fewer source images cuts more patches from each. Patches are
    ``(patch_size, patch_size)`` 8-bit RGB PNGs. The same arguments give byte-identical
    files (with the same package versions).

    The set is built in a temporary sibling folder and renamed into place, so
    ``out_dir`` is either absent or complete. If ``out_dir`` already holds a complete set
    built with the same parameters it is returned untouched; a set built by this function
    with other parameters (or with files missing) is replaced.

    Raises:
        ConfigError: a parameter is out of range.
        DatasetError: a source package is missing, or ``out_dir`` exists and holds
            something other than a demo set.
    """
    _validate(patch_size, per_image, seed)
    out_dir = Path(out_dir)
    params = _params(patch_size, per_image, seed)
    if _is_complete(out_dir, params):
        return out_dir
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DatasetError(
                f"{out_dir}: exists and is not a folder; choose another output folder"
            )
        if _read_manifest(out_dir) is None and any(out_dir.iterdir()):
            raise DatasetError(
                f"{out_dir}: folder is not empty and holds no demo set built by medtransfer; "
                "choose another output folder or empty this one"
            )

    aside: Path | None = None
    with atomic_directory(out_dir) as tmp:
        _write_set(tmp, patch_size, per_image, seed)
        if out_dir.exists() and not _is_complete(out_dir, params):
            # An outdated set of ours (or an empty folder): move it aside, then swap in.
            aside = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}.{time.time_ns()}")
            os.rename(out_dir, aside)
    if aside is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(aside)
    return out_dir
