"""Exclusive locks that die with their holder: ``flock`` on a lock file.

The operating system holds the lock on an open file, so a holder killed with ``kill -9``
(or a node whose file server notices it is gone) releases it without clean-up: there is
no stale lock to detect or break. Lock files stay in place (deleting one while another
process waits on it would let two processes hold "the" lock). This needs a file system
with working locks: local disks; NFS through its lock manager; Lustre mounted with the
``flock`` option.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from medtransfer.errors import ConfigError

POLL_SECONDS = 0.2


class Lock:
    """An exclusive ``flock`` on ``path`` (the file is created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this object holds it now."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise ConfigError(
                f"{self.path}: this file system refused a file lock ({exc.strerror}); sweeps "
                "need one to share work between processes. Put the results root on a file "
                "system with locks (--results-dir; Lustre needs the flock mount option)."
            ) from exc
        self._fd = fd
        return True

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        """Take the lock, waiting for its holder; ``on_wait()`` is called once, when the
        lock is found held."""
        if self.try_acquire():
            return
        if on_wait is not None:
            on_wait()
        while not self.try_acquire():
            time.sleep(POLL_SECONDS)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now (a missing file: no)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken just now
    return False
