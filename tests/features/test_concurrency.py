"""Processes sharing a store, for real (forked processes): no shard is computed twice, a
holder killed with SIGKILL leaves nothing that blocks or corrupts the store, and the next
(or a concurrent) run completes it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.data.manifest import Manifest
from tests.support.features import CountingNet, logged_images, store_features, tiny_manifest

CTX = multiprocessing.get_context("fork")
ROWS = 40


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return tiny_manifest(tmp_path_factory.mktemp("data"), per_class=ROWS // 2)


@pytest.fixture(scope="module")
def fresh(manifest: Manifest, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    found = store_features(CountingNet(), manifest, tmp_path_factory.mktemp("fresh"), batch_size=4)
    return np.array(found.features)


def _extract(manifest: Manifest, root: Path, log: Path, delay: float, out: Path) -> None:
    """A child process: extract the store with a slow counting net, save what it got."""
    torch.set_num_threads(1)
    found = store_features(
        CountingNet(log=log, delay=delay),
        manifest,
        root,
        batch_size=4,
        flush_seconds=0,
        poll_seconds=0.05,
    )
    np.save(out, np.asarray(found.features))


def _start(manifest: Manifest, root: Path, log: Path, delay: float, out: Path):
    process = CTX.Process(target=_extract, args=(manifest, root, log, delay, out))
    process.start()
    return process


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _chunks(root: Path) -> list[Path]:
    return list(root.glob("*.partial/rows-*.npy"))


def _finished(manifest: Manifest, root: Path, fresh: np.ndarray) -> None:
    """The store is complete and right: a new run reads it without a forward pass, and
    nothing but the complete store is left (no partial folder, lock or temporary)."""
    net = CountingNet()
    again = store_features(net, manifest, root, batch_size=4)
    assert net.seen == 0 and not again.computed
    assert np.array_equal(np.asarray(again.features), fresh)
    assert [p.name for p in root.iterdir()] == [again.path.name]


def test_two_processes_share_the_work_and_compute_each_image_once(
    manifest: Manifest, fresh: np.ndarray, tmp_path: Path
) -> None:
    root, log = tmp_path / "store", tmp_path / "forward.log"
    first = _start(manifest, root, log, 0.03, tmp_path / "a.npy")
    second = _start(manifest, root, log, 0.03, tmp_path / "b.npy")
    for process in (first, second):
        process.join(60)
        assert process.exitcode == 0
    per_process = logged_images(log)
    assert sum(per_process.values()) == ROWS  # no image went through the net twice
    assert len(per_process) == 2  # and both did part of the work
    for out in ("a.npy", "b.npy"):
        assert np.array_equal(np.load(tmp_path / out), fresh)
    _finished(manifest, root, fresh)


def test_a_holder_killed_mid_extraction_is_taken_over_by_a_running_process(
    manifest: Manifest, fresh: np.ndarray, tmp_path: Path
) -> None:
    root, log = tmp_path / "store", tmp_path / "forward.log"
    holder = _start(manifest, root, log, 0.3, tmp_path / "a.npy")
    _wait_for(lambda: len(_chunks(root)) >= 2, "the holder's first two shards")
    other = _start(manifest, root, log, 0.02, tmp_path / "b.npy")
    _wait_for(lambda: other.pid in logged_images(log), "the second process to start")
    os.kill(holder.pid, signal.SIGKILL)  # mid-extraction, holding a claim and the lock
    holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    other.join(60)
    assert other.exitcode == 0  # took over the killed holder's shard and finished the store
    assert np.array_equal(np.load(tmp_path / "b.npy"), fresh)
    # at most the batch in flight when the holder died was computed twice
    assert ROWS <= sum(logged_images(log).values()) <= ROWS + 4
    _finished(manifest, root, fresh)


def test_the_next_run_after_a_kill_completes_from_what_was_saved(
    manifest: Manifest, fresh: np.ndarray, tmp_path: Path
) -> None:
    root, log = tmp_path / "store", tmp_path / "forward.log"
    holder = _start(manifest, root, log, 0.2, tmp_path / "a.npy")
    _wait_for(lambda: len(_chunks(root)) >= 3, "three saved shards")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    saved = len(_chunks(root)) * 4
    assert (root / f"{next(root.glob('*.partial')).name[:16]}.lock").exists()  # left behind
    net = CountingNet()
    found = store_features(net, manifest, root, batch_size=4)  # no wait on the dead holder
    assert found.rows_reused == saved and net.seen == ROWS - saved
    _finished(manifest, root, fresh)
