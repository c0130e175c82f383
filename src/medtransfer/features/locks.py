"""Locks that coordinate processes sharing a feature store, and that die with their holder.

All locks are advisory locks held by the operating system on an open file, so a holder
killed with ``kill -9`` (or a crashed node, once its file server notices) releases them
without any clean-up: there is no stale lock to detect or break. Lock files carry the
holder's pid and host for people (``features status``, waiting messages), never for
deciding who holds the lock.

* :class:`FileLock` — ``flock`` on one file, shared or exclusive. Workers that extract
  into a partial store hold it shared; whoever merges, discards or deletes the partial
  store holds it exclusive. Deleting a lock file is safe: an acquirer checks, once it holds
  the lock, that the path still names the file it locked (else it starts over).
* :class:`Claims` — one byte-range lock per shard in one file (``lockf``): a worker claims a
  shard before computing it and releases it once the shard is saved. Byte-range locks
  belong to the process (not to one file descriptor), so a process never conflicts with
  itself; processes never compute the same shard at once.
* :class:`WorkerFile` — ``<partial>/workers/<host>-<pid>.json``: who is working on a
  partial store (pid, host, start time, part), locked by its owner for as long as it works.
  A worker file whose lock can be taken belongs to a process that is gone.

These need a file system with working locks (local disks do; NFS through its lock
manager; Lustre when mounted with ``flock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError

POLL_SECONDS = 0.5


def _lock_failed(exc: OSError) -> bool:
    return exc.errno in (errno.EACCES, errno.EAGAIN)


#: What a refused lock means for the feature store, and where to move it.
STORE_LOCK_HINT = (
    "the feature store needs one to share work between processes. Put the cache on a file "
    "system with locks (--cache-dir or MEDTRANSFER_CACHE; Lustre needs the flock mount option)."
)


def _unsupported(path: Path, exc: OSError, hint: str = STORE_LOCK_HINT) -> ConfigError:
    return ConfigError(f"{path}: this file system refused a file lock ({exc.strerror}); {hint}")


class FileLock:
    """A shared or exclusive ``flock`` on ``path`` (created if missing, unless ``create`` is
    False: then a missing file cannot be locked); ``hint``: what a file system without
    locks means for the caller and where to move the file (the error's second half)."""

    def __init__(self, path: Path, *, create: bool = True, hint: str = STORE_LOCK_HINT) -> None:
        self.path = Path(path)
        self.create = create
        self.hint = hint
        self.fd: int | None = None
        self.exclusive = False

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(
        self,
        *,
        exclusive: bool,
        blocking: bool = True,
        poll: float = POLL_SECONDS,
        on_wait: Callable[[], bool | None] | None = None,
    ) -> bool:
        """Take the lock; True once held. Without ``blocking``, False when another process
        holds it (or the file is missing and may not be created). While waiting,
        ``on_wait()`` is called before every poll; when it returns True the wait is
        abandoned and ``acquire`` returns False."""
        if self.fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | (os.O_CREAT if self.create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o666)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if not _lock_failed(exc):
                    raise _unsupported(self.path, exc, self.hint) from exc
                if not blocking or (on_wait is not None and on_wait()):
                    return False
                time.sleep(poll)
                continue
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd, self.exclusive = fd, exclusive
                return True
            os.close(fd)  # the file was deleted (and maybe re-created) meanwhile

    def release(self, *, delete: bool = False) -> None:
        """Release the lock; with ``delete`` (exclusive holders only), remove the file first."""
        if self.fd is None:
            return
        if delete and self.exclusive:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        fd, self.fd = self.fd, None
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def try_exclusive(path: Path, *, create: bool = True) -> Iterator[FileLock | None]:
    """The exclusive lock on ``path`` if nobody holds it now (else None), released after;
    without ``create``, None also when the file does not exist."""
    lock = FileLock(path, create=create)
    got = lock.acquire(exclusive=True, blocking=False)
    try:
        yield lock if got else None
    finally:
        lock.release()


class Claims:
    """Per-shard claims: a one-byte ``lockf`` range at offset ``shard`` in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        self.held: set[int] = set()

    def claim(self, shard: int) -> bool:
        """Claim ``shard``; False when another process holds it."""
        if shard in self.held:
            return True
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, shard, os.SEEK_SET)
        except OSError as exc:
            if _lock_failed(exc):
                return False
            raise _unsupported(self.path, exc) from exc
        self.held.add(shard)
        return True

    def release(self, shard: int) -> None:
        if shard in self.held:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, shard, os.SEEK_SET)
            self.held.discard(shard)

    def close(self) -> None:
        """Release every claim (closing the file releases this process's ranges)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.held.clear()

    def __enter__(self) -> Claims:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_name() -> str:
    return socket.gethostname() or "unknown-host"


@dataclass(frozen=True)
class WorkerInfo:
    """A process working on a partial store, as its worker file says; ``alive``: whether
    its lock is still held (False: the process is gone)."""

    pid: int
    host: str
    started: float
    part: str
    alive: bool

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        state = "" if self.alive else " (gone)"
        return f"pid {self.pid} on {self.host}, part {self.part}, since {when}{state}"


class WorkerFile:
    """This process's worker file in ``folder`` (module docstring), locked while it lives."""

    def __init__(self, folder: Path, part: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{host_name()}-{os.getpid()}.json"
        self.lock = FileLock(self.path)
        self.lock.acquire(exclusive=True)
        info = {"pid": os.getpid(), "host": host_name(), "started": time.time(), "part": part}
        assert self.lock.fd is not None
        os.ftruncate(self.lock.fd, 0)
        os.pwrite(self.lock.fd, json.dumps(info).encode(), 0)

    def close(self) -> None:
        self.lock.release(delete=True)

    def __enter__(self) -> WorkerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_workers(folder: Path, *, remove_gone: bool = False) -> list[WorkerInfo]:
    """The worker files in ``folder``; with ``remove_gone``, the files of processes that are
    gone are deleted (and not listed)."""
    if not folder.is_dir():
        return []
    workers = []
    for path in sorted(folder.glob("*.json")):
        try:
            info: dict[str, Any] = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        with try_exclusive(path, create=False) as free:
            if not path.exists():
                continue  # its worker finished meanwhile
            alive = free is None
            if free is not None and remove_gone:
                free.release(delete=True)
                continue
        workers.append(
            WorkerInfo(
                pid=int(info.get("pid", -1)),
                host=str(info.get("host", "?")),
                started=float(info.get("started", 0.0)),
                part=str(info.get("part", "?")),
                alive=alive,
            )
        )
    return workers
