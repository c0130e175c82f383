"""Store locks: shared and exclusive, safe to delete, released when their holder dies."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from medtransfer.features.locks import Claims, FileLock, WorkerFile, list_workers

CTX = multiprocessing.get_context("fork")


def test_shared_holders_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    first, second, writer = FileLock(path), FileLock(path), FileLock(path)
    assert first.acquire(exclusive=False) and second.acquire(exclusive=False)
    assert not writer.acquire(exclusive=True, blocking=False)
    waits: list[int] = []

    def give_up_after_three_polls() -> bool:
        waits.append(1)
        return len(waits) > 3

    assert not writer.acquire(exclusive=True, poll=0.01, on_wait=give_up_after_three_polls)
    assert len(waits) == 4
    first.release()
    second.release()
    assert writer.acquire(exclusive=True, blocking=False)
    assert not FileLock(path).acquire(exclusive=False, blocking=False)
    writer.release(delete=True)
    assert not path.exists()


def test_a_lock_file_deleted_while_waited_on_is_not_shared_by_two(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    holder = FileLock(path)
    assert holder.acquire(exclusive=True)
    stale_fd = os.open(path, os.O_RDWR)  # a waiter that opened the old file
    holder.release(delete=True)
    newcomer = FileLock(path)
    assert newcomer.acquire(exclusive=True, blocking=False)  # on a new file
    waiter = FileLock(path)
    assert not waiter.acquire(exclusive=True, blocking=False)  # never on the deleted one
    os.close(stale_fd)
    newcomer.release()


def _hold_and_die(path: Path, folder: Path, ready) -> None:
    with Claims(path) as claims:
        assert claims.claim(3)
        WorkerFile(folder, "2/3")
        ready.set()
        os._exit(0)  # no clean-up at all, like kill -9


def test_claims_and_worker_files_of_a_dead_process_are_free(tmp_path: Path) -> None:
    claims_path, folder = tmp_path / "claims", tmp_path / "workers"
    ready = CTX.Event()
    mine = Claims(claims_path)
    process = CTX.Process(target=_hold_and_die, args=(claims_path, folder, ready))
    process.start()
    ready.wait(30)
    process.join(30)
    assert mine.claim(3)  # the dead process's claim went with it
    mine.close()
    (gone,) = list_workers(folder)
    assert gone.pid == process.pid and gone.part == "2/3" and not gone.alive
    assert "(gone)" in gone.describe()
    assert list_workers(folder, remove_gone=True) == [] and not list(folder.iterdir())


def test_a_live_worker_is_listed_and_claims_exclude_other_processes(tmp_path: Path) -> None:
    folder = tmp_path / "workers"
    with WorkerFile(folder, "all"):
        (me,) = list_workers(folder, remove_gone=True)
        assert me.alive and me.pid == os.getpid() and me.part == "all"
    assert list_workers(folder) == []
    with Claims(tmp_path / "claims") as claims:
        assert claims.claim(0) and claims.claim(0)  # a process never conflicts with itself
        result = CTX.Queue()
        process = CTX.Process(target=lambda: result.put(Claims(tmp_path / "claims").claim(0)))
        process.start()
        assert result.get(timeout=30) is False
        process.join(30)
