"""Atomic file-system writes: a reader never sees a half-written file or folder.

Every file is written to a temporary sibling in the same directory, flushed, fsynced and
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).

Temporary files and folders are created private (``tempfile`` gives them modes 0600 and
0700) and then given the modes a plain ``open``/``mkdir`` would (0666 and 0777 less the
umask) before anything is renamed into place, so a cache or results root shared by a group
is readable by the group exactly as the umask says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """This process's umask (read from ``/proc`` where it can be, so no thread ever sees
    it changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new temporary file in ``folder`` (open descriptor, path) with the mode a plain
    ``open`` would give it (module docstring)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


def temp_folder(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A new temporary folder in ``folder`` with the mode a plain ``mkdir`` would give it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_array(path: Path, array: Any) -> Path:
    """Write a NumPy array to ``path`` in ``.npy`` format atomically; returns ``path``."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``final`` on success.

    Yields the temporary folder to fill. If the block raises (or the process dies), the
    temporary folder is removed (or left under a ``.tmp`` name that never reads as
    complete) and ``final`` is untouched. If ``final`` already exists when the block ends
    (another process won the race), the new copy is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(final.parent, f".{final.name}.")
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of the canonical (key-sorted, compact) JSON form of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
