"""The sweep's locks (a cell's, a unit's, an extraction part's): exclusive
:class:`~medtransfer.features.locks.FileLock` s, which die with their holder.

The operating system holds the lock on an open file, so a holder killed with ``kill -9``
(or a node whose file server notices it is gone) releases it without clean-up: there is
no stale lock to detect or break. The sweep never deletes its lock files. This needs a file
system with working locks: local disks; NFS through its lock manager; Lustre mounted with
the ``flock`` option.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medtransfer.features.locks import FileLock, try_exclusive

POLL_SECONDS = 0.2
#: What a refused lock means for a sweep, and where to move the results root.
SWEEP_LOCK_HINT = (
    "sweeps need one to share work between processes. Put the results root on a file "
    "system with locks (--results-dir; Lustre needs the flock mount option)."
)


class Lock:
    """An exclusive lock on ``path`` (the file is created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(self.path, hint=SWEEP_LOCK_HINT)

    @property
    def held(self) -> bool:
        return self._lock.held

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this object holds it now."""
        return self._lock.held or self._lock.acquire(exclusive=True, blocking=False)

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        """Take the lock, waiting for its holder; ``on_wait()`` is called once, when the
        lock is found held."""
        if self.try_acquire():
            return
        if on_wait is not None:
            on_wait()
        self._lock.acquire(exclusive=True, poll=POLL_SECONDS)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now (a missing file: no)."""
    if not Path(path).exists():
        return False
    with try_exclusive(path, create=False) as free:
        return free is None and Path(path).exists()
