"""Image decoding: every mode to 8-bit RGB, high-depth range-scaled, bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from medtransfer.data.images import load_image, to_uint8, verify_image
from medtransfer.errors import DatasetError, ImageDecodeError


def _rgb(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert arr.dtype == np.uint8
    assert arr.ndim == 3
    assert arr.shape[2] == 3
    return arr


def _ramp16(lo: int = 1000, hi: int = 3000, shape: tuple[int, int] = (20, 50)) -> np.ndarray:
    return np.linspace(lo, hi, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


# --- to_uint8 ---------------------------------------------------------------------------


def test_to_uint8_scales_real_range_with_rounding() -> None:
    arr = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    assert to_uint8(arr).tolist() == [[0, 128, 255]]  # 127.5 rounds to even -> 128


def test_to_uint8_any_dtype_and_shape() -> None:
    signed = np.array([[-1024, 0], [1000, 3071]], dtype=np.int16)
    out = to_uint8(signed)
    assert out.dtype == np.uint8
    assert (out.min(), out.max()) == (0, 255)
    color = np.stack([_ramp16(), _ramp16() // 2, _ramp16() // 4], axis=-1)
    out3 = to_uint8(color)
    assert out3.shape == color.shape
    assert out3.max() == 255  # one range for all channels: colour balance kept
    assert out3[..., 2].max() < 100
    big = np.array([[0, 2**31 - 1]], dtype=np.int64)
    assert to_uint8(big).tolist() == [[0, 255]]
    assert to_uint8(np.array([[False, True]])).tolist() == [[0, 255]]


def test_to_uint8_constant_and_nonfinite() -> None:
    assert not to_uint8(np.full((4, 4), 7.5)).any()
    floats = np.array([[np.nan, 0.0], [np.inf, 2.0]], dtype=np.float32)
    assert to_uint8(floats).tolist() == [[0, 0], [0, 255]]
    assert not to_uint8(np.full((2, 2), np.nan)).any()


def test_to_uint8_rejects_bad_shape_and_dtype() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_uint8(np.zeros(5))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8(np.zeros((2, 2), dtype=np.complex64))


# --- high-depth grayscale -----------------------------------------------------------------


def test_16bit_png_spans_full_range_not_white(tmp_path: Path) -> None:
    path = tmp_path / "cxr16.png"
    source = _ramp16(1000, 3000)
    Image.fromarray(source).save(path)
    assert Image.open(path).mode == "I;16"
    # The original's bug: Pillow's own conversion clips everything above 255 to white.
    assert np.asarray(Image.open(path).convert("RGB")).min() == 255
    arr = _rgb(path)
    assert arr.shape == (20, 50, 3)
    assert (arr.min(), arr.max()) == (0, 255)
    assert np.array_equal(arr[..., 0], arr[..., 1])
    assert np.array_equal(arr[..., 0], arr[..., 2])
    assert np.array_equal(arr[..., 0], to_uint8(source))
    assert np.all(np.diff(arr[..., 0].ravel().astype(int)) >= 0)  # order kept


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("I;16B", _ramp16(500, 700).astype(">u2")),
        ("I", _ramp16().astype(np.int32) - 2000),
        ("F", _ramp16().astype(np.float32) / 7.0),
    ],
)
def test_high_depth_tiff_modes_are_range_scaled(
    tmp_path: Path, mode: str, array: np.ndarray
) -> None:
    path = tmp_path / f"deep_{mode.replace(';', '')}.tif"
    if mode == "I;16B":
        img = Image.frombytes(mode, (array.shape[1], array.shape[0]), array.tobytes())
    else:
        img = Image.fromarray(array)
    img.save(path)
    assert Image.open(path).mode == mode
    arr = _rgb(path)
    assert (arr.min(), arr.max()) == (0, 255)
    assert np.array_equal(arr[..., 0], to_uint8(array.astype(np.float64)))


def test_constant_16bit_maps_to_black(tmp_path: Path) -> None:
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(path)
    assert not _rgb(path).any()


# --- 8-bit and colour modes ---------------------------------------------------------------


def test_gray_and_bilevel(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8)).save(gray)
    arr = _rgb(gray)
    assert arr[..., 0].tolist() == [[0, 100], [200, 255]]  # 8-bit is NOT rescaled
    assert np.array_equal(arr[..., 0], arr[..., 2])

    bilevel = tmp_path / "mask.png"
    Image.fromarray(np.array([[True, False]])).convert("1").save(bilevel)
    assert Image.open(bilevel).mode == "1"
    assert _rgb(bilevel)[..., 0].tolist() == [[255, 0]]


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    opaque = tmp_path / "pal.png"
    img.save(opaque)
    assert Image.open(opaque).mode == "P"
    assert _rgb(opaque)[0].tolist() == [[10, 20, 30], [200, 100, 50]]

    transparent = tmp_path / "pal_t.png"
    img.save(transparent, transparency=1)
    assert "transparency" in Image.open(transparent).info
    assert _rgb(transparent)[0].tolist() == [[10, 20, 30], [0, 0, 0]]  # onto black


def test_rgba_and_la_composite_onto_black(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.png"
    pixels = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [9, 9, 9, 0]]], np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(rgba)
    assert _rgb(rgba)[0].tolist() == [[200, 100, 50], [100, 50, 25], [0, 0, 0]]

    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[200, 128], [77, 255]]], np.uint8), mode="LA").save(la)
    assert Image.open(la).mode == "LA"
    assert _rgb(la)[0].tolist() == [[100, 100, 100], [77, 77, 77]]


def test_cmyk_jpeg_and_ycbcr_tiff(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk, quality=95)
    assert Image.open(cmyk).mode == "CMYK"
    red = _rgb(cmyk)[8, 8].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15

    ycbcr = tmp_path / "ycbcr.tif"
    Image.new("YCbCr", (4, 4), (128, 128, 128)).save(ycbcr)
    assert Image.open(ycbcr).mode == "YCbCr"
    gray = _rgb(ycbcr).astype(int)
    assert np.all(np.abs(gray - 128) <= 2)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # 40 wide x 20 high, red block at the top-left quadrant, black elsewhere.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :20] = (255, 0, 0)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    arr = _rgb(path)
    assert arr.shape == (40, 20, 3)  # width and height swapped
    # Rotating 90 degrees clockwise moves the top-left quadrant to the top-right.
    assert arr[:20, 10:, 0].mean() > 200
    assert arr[:20, :10, 0].mean() < 40
    assert arr[20:, :, 0].mean() < 40
    assert verify_image(path) == (20, 40)


# --- refusing bad files -------------------------------------------------------------------


def _random_rgb(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("suffix", "cut"),
    [(".png", 0.5), (".png", -20), (".jpg", 0.5), (".jpg", -200)],
)
def test_truncated_files_raise(tmp_path: Path, suffix: str, cut: float) -> None:
    whole = tmp_path / f"whole{suffix}"
    _random_rgb().save(whole)
    data = whole.read_bytes()
    keep = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
    broken = tmp_path / f"scan_0042{suffix}"
    broken.write_bytes(data[:keep])
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(ImageDecodeError, match="truncated/corrupt") as info:
        load_image(broken)
    message = str(info.value)
    assert "scan_0042" in message
    assert "re-download it or remove it" in message
    with pytest.raises(ImageDecodeError, match="scan_0042"):
        verify_image(broken)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is before


def test_corrupt_png_checksum_raises(tmp_path: Path) -> None:
    path = tmp_path / "flipped.png"
    _random_rgb(1).save(path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match=r"flipped\.png.*truncated/corrupt"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ghost.png"
    with pytest.raises(ImageDecodeError, match=r"ghost\.png: image file not found"):
        load_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient list, not an image\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.png: is not an image file") as info:
        load_image(path)
    assert isinstance(info.value, DatasetError)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_image(folder)


def test_verify_image_returns_size_and_load_detaches_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (7, 5), (1, 2, 3)).save(path)
    assert verify_image(path) == (7, 5)
    img = load_image(path)
    path.unlink()  # the returned image no longer needs the file
    assert np.asarray(img)[0, 0].tolist() == [1, 2, 3]
