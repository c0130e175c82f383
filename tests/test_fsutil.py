"""Atomic writes leave files and folders with the modes a plain ``open``/``mkdir`` gives
under the umask (a cache shared by a group stays readable), never the private modes of
``tempfile``; a feature store written under umask 002 is group-writable throughout."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medtransfer.features.partial import open_partial
from medtransfer.fsutil import atomic_directory, atomic_save_array, atomic_write_text, current_umask


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask: None) -> None:
    assert current_umask() == 0o002
    assert current_umask() == 0o002


def test_atomic_files_and_folders_follow_the_umask(tmp_path: Path, umask: None) -> None:
    text = atomic_write_text(tmp_path / "a" / "record.json", "{}\n")
    array = atomic_save_array(tmp_path / "features.npy", np.zeros((2, 3), np.float32))
    with atomic_directory(tmp_path / "store") as folder:
        (folder / "inside.txt").write_text("x")
    assert _mode(text) == 0o664 and _mode(array) == 0o664
    assert _mode(tmp_path / "store") == 0o775
    os.umask(0o077)  # a private umask is honoured too
    assert _mode(atomic_write_text(tmp_path / "private.json", "{}")) == 0o600


def test_a_partial_store_and_its_chunks_follow_the_umask(tmp_path: Path, umask: None) -> None:
    partial = open_partial(
        tmp_path / "partial", key="k" * 64, n_rows=4, shard_rows=2, recipe={}, dim=3
    )
    chunk = partial.write_chunk(0, np.ones((2, 3), np.float32))
    assert _mode(partial.folder) == 0o775
    assert _mode(chunk.path) == 0o664


def test_lock_files_let_the_group_lock_them(tmp_path: Path, umask: None) -> None:
    from medtransfer.features.locks import Claims, FileLock

    with FileLock(tmp_path / "store.lock") as lock:
        assert lock.acquire(exclusive=False)
    with Claims(tmp_path / "claims") as claims:
        assert claims.claim(0)
    assert _mode(tmp_path / "store.lock") == 0o664 and _mode(tmp_path / "claims") == 0o664
