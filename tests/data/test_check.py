"""``datasets check``'s problems: one clean message each, the file named once, one fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from medtransfer.data.check import check_images
from medtransfer.data.images import load_image
from medtransfer.data.sources.base import Problem
from medtransfer.data.sources.cifar import load_cifar
from medtransfer.data.sources.stoic import load_stoic
from medtransfer.errors import DatasetError, ImageDecodeError


def _png(path: Path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _said_once(text: str, part: str) -> bool:
    return text.count(part) == 1


def test_truncated_image_is_one_clean_line(tmp_path: Path) -> None:
    image = _png(tmp_path / "img03.png")
    image.write_bytes(image.read_bytes()[:200])
    [problem] = check_images([image], workers=1, progress=False)
    line = str(problem)
    assert re.fullmatch(
        rf"\[unreadable-image\] {re.escape(str(image))}: image file is truncated/corrupt "
        r"\([^;]+\) — re-download it or remove it from the dataset",
        line,
    ), line
    assert _said_once(line, str(image)) and _said_once(line, "re-download")


def test_a_file_pillow_cannot_identify_is_named_once(tmp_path: Path) -> None:
    """Pillow's own message repeats the path (``cannot identify image file '<path>'``)."""
    text = tmp_path / "notes.png"
    text.write_text("a list of patients, not an image")
    [problem] = check_images([text], workers=1, progress=False)
    line = str(problem)
    assert line.startswith(f"[unreadable-image] {text}: is not an image file Pillow can read")
    assert line.endswith(
        "— check that it really is a PNG/JPEG/TIFF/BMP image, or remove it from the dataset"
    )
    assert _said_once(line, str(text)) and _said_once(line, "remove it")


def test_the_error_itself_reads_path_detail_fix(tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    try:
        load_image(missing)
    except ImageDecodeError as exc:
        assert str(exc) == (
            f"{missing}: image file not found; check the path (and the dataset root), or "
            "remove the entry that refers to it"
        )
        assert (exc.path, exc.detail) == (str(missing), "image file not found")
    else:
        raise AssertionError("no error")


def test_ct_and_cifar_loaders_give_clean_problems(tmp_path: Path) -> None:
    volume = tmp_path / "corrupt.mha"
    volume.write_text("not a volume")
    [ct] = check_images([volume], workers=1, progress=False, loader=load_stoic)
    line = str(ct)
    assert line.startswith(f"[unreadable-image] {volume}: cannot be read as a CT volume")
    assert line.endswith(" — re-download it") and _said_once(line, str(volume))

    batch = tmp_path / "data_batch_1"
    batch.write_bytes(b"\x80\x02 not a pickle")
    item = Path(f"{batch}#3")
    [cifar] = check_images([item], workers=1, progress=False, loader=load_cifar)
    line = str(cifar)
    assert line.startswith(f"[unreadable-image] {item}: ")
    assert _said_once(line, str(batch)) and _said_once(line, "re-download")


def test_a_plain_message_loses_its_leading_path_and_gives_its_own_advice() -> None:
    error = DatasetError("/d/x.bin: file not found.")
    assert str(Problem.from_error("missing-file", "/d/x.bin", error, "restore it")) == (
        "[missing-file] /d/x.bin: file not found — restore it"
    )
    advised = DatasetError("/d/x.bin: bad header; re-download the dataset.")
    assert str(Problem.from_error("unreadable-image", "/d/x.bin", advised, "re-download it")) == (
        "[unreadable-image] /d/x.bin: bad header — re-download the dataset"
    )
