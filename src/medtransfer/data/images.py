"""Decode an image file into the 8-bit RGB picture a radiologist would expect to see.

The original code called ``Image.open(path).convert("RGB")`` (or nothing at all), which
clips 16-bit grayscale at 255 (a chest X-ray PNG becomes a white square), leaves palette,
grayscale and CMYK files with the wrong number of channels, and, in one script only,
accepted truncated files. Here every file goes through one path:

1. integrity check (``Image.verify``: chunk checksums and the end marker for PNG) and a
   full decode (``Image.load``); any failure is an :class:`ImageDecodeError` that names
   the file. The global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched;
2. EXIF orientation applied (``ImageOps.exif_transpose``);
3. conversion to mode ``"RGB"`` with 8 bits per channel:

   * high-depth grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``, ``F``) is
     scaled linearly by the image's own min..max to 0..255 (see :func:`to_uint8`), then
     replicated to three channels;
   * anything with transparency (``RGBA``, ``LA``, ``PA``, palette or grayscale with a
     ``transparency`` entry) is composited onto **black**: medical images have black
     backgrounds (outside the X-ray field, outside the fundus disc), so a transparent
     pixel reads as "no signal" rather than as a bright white frame;
   * every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ...) uses
     Pillow's own conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medtransfer.errors import ImageDecodeError, without_path

__all__ = ["HIGH_DEPTH_MODES", "load_image", "to_uint8", "verify_image"]

#: Pillow modes holding grayscale with more than 8 bits; they are range-scaled to 8 bits.
HIGH_DEPTH_MODES: frozenset[str] = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array linearly from its own min..max to 0..255 and round to ``uint8``.

    Args:
        array: shape ``(H, W)`` or ``(H, W, C)``, any real numeric dtype (bool, signed or
            unsigned integers of any width, floats). The range is taken over the whole
            array (all channels together, so colour balance is kept). Non-finite values
            (NaN, +-inf) are ignored when finding the range and come out as 0.

    Returns:
        ``uint8`` array of the same shape: the minimum maps to 0, the maximum to 255,
        values in between to ``round((x - min) * 255 / (max - min))``. A constant array
        (or one with no finite value) maps to all zeros.

    Raises:
        ValueError: the array is not 2-D or 3-D, or its dtype is not real numeric.
    """
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"to_uint8 expects an (H, W) or (H, W, C) array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"to_uint8 expects a real numeric array, got dtype {arr.dtype}")
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    out = np.zeros(arr.shape, dtype=np.uint8)
    if not finite.any():
        return out
    lo = float(values[finite].min())
    hi = float(values[finite].max())
    if hi <= lo:
        return out
    scaled = np.rint((values[finite] - lo) * (255.0 / (hi - lo)))
    out[finite] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def _composite_on_black(img: Image.Image) -> Image.Image:
    """Composite an image with alpha onto black; returns mode ``"RGB"``.

    Each channel becomes ``round(value * alpha / 255)``.
    """
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)  # (H, W, 4)
    alpha = rgba[..., 3:4]
    rgb = (rgba[..., :3] * alpha + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit ``"RGB"`` (see module doc)."""
    mode = img.mode
    if mode in HIGH_DEPTH_MODES:
        gray = to_uint8(np.asarray(img))  # (H, W) uint8
        return Image.fromarray(np.stack([gray, gray, gray], axis=-1), mode="RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_black(img)
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _missing_or_not_file(path: Path) -> ImageDecodeError | None:
    """The error for a path that does not exist or is not a regular file, else None."""
    if not path.exists():
        return ImageDecodeError.of(
            path,
            "image file not found",
            "check the path (and the dataset root), or remove the entry that refers to it",
        )
    if not path.is_file():
        return ImageDecodeError.of(
            path, "is not a regular file (a folder?)", "point to an image file instead"
        )
    return None


def _reason(exc: BaseException, path: Path) -> str:
    """Pillow's message about ``path``, without the file name it sometimes repeats."""
    return without_path(str(exc) or type(exc).__name__, path)


def load_image(path: Path) -> Image.Image:
    """Fully decode the image at ``path`` and return it as 8-bit RGB.

    Returns:
        A Pillow image of mode ``"RGB"`` (``np.asarray`` gives ``(H, W, 3)`` ``uint8``),
        with its EXIF orientation applied (width and height swapped for 90-degree tags),
        detached from the file (the file is closed).

    Raises:
        ImageDecodeError: the file is missing, is not an image Pillow can read, is
            truncated or corrupt, or has a mode that cannot be turned into RGB. The
            message names the file and says how to fix it.
    """
    path = Path(path)
    missing = _missing_or_not_file(path)
    if missing is not None:
        raise missing
    try:
        with Image.open(path) as probe:
            probe.verify()  # PNG: chunk CRCs and the end marker; a no-op for some formats
        with Image.open(path) as img:
            img.load()  # full decode: a truncated file raises here instead of padding
            oriented = ImageOps.exif_transpose(img)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError.of(
            path,
            f"is not an image file Pillow can read ({_reason(exc, path)})",
            "check that it really is a PNG/JPEG/TIFF/BMP image, or remove it from the dataset",
        ) from exc
    except PermissionError as exc:
        raise ImageDecodeError.of(
            path, f"cannot be read ({_reason(exc, path)})", "fix the file's permissions"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError.of(
            path,
            f"image is too large to decode safely ({_reason(exc, path)})",
            "downscale it, or remove it from the dataset",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError.of(
            path,
            f"image file is truncated/corrupt ({_reason(exc, path)})",
            "re-download it or remove it from the dataset",
        ) from exc
    try:
        rgb = _to_rgb(oriented)
    except (ValueError, OSError) as exc:
        raise ImageDecodeError.of(
            path,
            f"Pillow mode {oriented.mode!r} cannot be converted to RGB ({_reason(exc, path)})",
            "convert the file to an 8-bit RGB or grayscale PNG",
        ) from exc
    return rgb


def verify_image(path: Path) -> tuple[int, int]:
    """Fully decode ``path`` as :func:`load_image` does; return its ``(width, height)``.

    The size is the displayed size, i.e. after the EXIF orientation is applied.

    Raises:
        ImageDecodeError: as :func:`load_image`.
    """
    img = load_image(path)
    return img.size
