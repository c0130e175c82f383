"""The one layout diagnosis every reader uses: what is missing, what is wrong, how to fix it."""

from __future__ import annotations

from pathlib import Path

from medtransfer.data.sources.layout import (
    TOO_DEEP,
    TOO_SHALLOW,
    Clue,
    layout_error,
    one_level_too_deep,
    synth_hint,
)
from medtransfer.errors import DatasetError


def test_message_names_the_path_the_expectation_and_the_synth_command(tmp_path: Path) -> None:
    error = layout_error("bach", tmp_path / "Photos", "the class folders")
    assert isinstance(error, DatasetError)
    assert str(error) == (
        f"{tmp_path / 'Photos'} not found: expected the class folders. Run `medtransfer "
        "datasets synth --dataset bach --out DIR` to see the layout."
    )
    assert synth_hint("stoic") in str(layout_error("stoic", tmp_path, "x"))


def test_the_first_clue_that_applies_is_given(tmp_path: Path) -> None:
    error = layout_error(
        "cifar10",
        tmp_path / "cifar-10-batches-py",
        "the batches",
        Clue(None, "never shown", "never shown"),
        Clue(tmp_path / "data_batch_1", TOO_SHALLOW, f"move the batches into {tmp_path}/x"),
        Clue(tmp_path / "other", "not shown either", "no"),
    )
    text = str(error)
    assert f"{tmp_path / 'data_batch_1'} exists: {TOO_SHALLOW}; move the batches into" in text
    assert "never shown" not in text and "not shown either" not in text
    assert text.index("exists") < text.index("medtransfer datasets synth --dataset cifar10")


def test_one_level_too_deep_names_the_extra_folder(tmp_path: Path) -> None:
    (tmp_path / "download" / "train").mkdir(parents=True)
    clue = one_level_too_deep(tmp_path, "train")
    assert clue == Clue(
        tmp_path / "download" / "train",
        TOO_DEEP,
        f"move the contents of {tmp_path / 'download'} up into {tmp_path}",
    )
    assert one_level_too_deep(tmp_path, "test") is None
    assert one_level_too_deep(tmp_path / "absent", "train") is None


def test_one_level_too_deep_takes_a_glob_and_reports_the_first_match(tmp_path: Path) -> None:
    for extra in ("b", "a"):
        (tmp_path / extra / "images_001").mkdir(parents=True)
    clue = one_level_too_deep(tmp_path, "images_*")
    assert clue is not None and clue.found == tmp_path / "a" / "images_001"
    deep = one_level_too_deep(tmp_path, "images_001/nothing")
    assert deep is None
