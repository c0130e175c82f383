"""Every synthetic writer: deterministic per seed, written where ``synthesize`` says."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.data.catalog import CATALOG, get_dataset_spec
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import WRITERS, synthesize
from medtransfer.errors import DatasetError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_every_writer_belongs_to_a_catalog_dataset() -> None:
    assert set(WRITERS) == {spec.name for spec in CATALOG}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_same_seed_writes_the_same_bytes(name: str, tmp_path: Path) -> None:
    options = SynthOptions(per_class=5, size=16, seed=9)
    WRITERS[name](tmp_path / "a", options)
    WRITERS[name](tmp_path / "b", options)
    first = _files(tmp_path / "a")
    assert first and first == _files(tmp_path / "b")


def test_synthesize_writes_under_the_dataset_folder_by_alias(tmp_path: Path) -> None:
    root = synthesize("shenzhen", tmp_path, SynthOptions(per_class=1, size=16))
    assert root == tmp_path / get_dataset_spec("shenzhencxr").folder
    assert (root / "shenzhen_metadata.csv").is_file()


def test_synthesize_refuses_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Unknown dataset 'nope'"):
        synthesize("nope", tmp_path)
