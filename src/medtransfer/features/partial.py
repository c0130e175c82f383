"""A store being extracted: ``<key16>.partial/``, its layout, and the chunks already saved.

::

    <key16>.partial/
        layout.json      key, rows, shard size, the key's ingredients (written once, atomically,
                         with the folder itself)
        claims           per-shard claims of the processes extracting (:mod:`.locks`)
        rows-<start>-<stop>.<sha16>.npy
                         float32 (stop - start, D): the features of rows [start, stop), a run of
                         whole shards; sha16: the first 16 hex digits of :func:`chunk_digest`
                         (the rows and the file's bytes, so a renamed chunk fails too)
        parts/part-<i>-of-<N>.json
                         written when part i of N is done (rows, time, host)
        workers/<host>-<pid>.json
                         the processes working on the store (:class:`.locks.WorkerFile`)

Nothing in a chunk is trusted before it is validated: its name must parse, its rows must
begin and end on shard boundaries of the recorded layout, the rows and the file's bytes
must hash to the digest in its name (a truncated, damaged, edited or renamed file does
not), and the array must be float32 of shape (stop - start, D), D the backbone's feature
width (when the backbone states one; else chunks of different widths are all discarded).
A chunk that fails is deleted (and its rows computed again); chunks that overlap keep the
first. A ``layout.json`` that is missing, unreadable or names another key or row count
discards the whole folder. Chunks are written under a temporary name and renamed, so a
chunk file is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.features.layout import Layout, Part
from medtransfer.features.locks import WorkerInfo, host_name, list_workers
from medtransfer.fsutil import atomic_write_json, temp_file, temp_folder

#: Version of the partial-store format (``layout.json``).
LAYOUT_VERSION = 2
LAYOUT = "layout.json"
CLAIMS = "claims"
_CHUNK = re.compile(r"^rows-(\d{9})-(\d{9})\.([0-9a-f]{16})\.npy$")


@dataclass(frozen=True)
class Chunk:
    """A validated chunk file: rows ``[start, stop)``, ``dim`` features a row."""

    path: Path
    start: int
    stop: int
    dim: int


@dataclass(frozen=True)
class Coverage:
    """The valid chunks of a partial store: ``chunks`` in row order, ``shards``: shard
    index -> the chunk that holds it, ``dim``: the feature width (None: no chunk yet)."""

    chunks: list[Chunk]
    shards: dict[int, Chunk]
    dim: int | None

    @property
    def rows(self) -> int:
        return sum(c.stop - c.start for c in self.chunks)


def chunk_name(start: int, stop: int, digest: str) -> str:
    return f"rows-{start:09d}-{stop:09d}.{digest[:16]}.npy"


def _hasher(start: int, stop: int) -> Any:
    """A sha256 primed with the rows a chunk holds (see :func:`chunk_digest`)."""
    return hashlib.sha256(f"medtransfer chunk rows {start}-{stop}\n".encode())


def chunk_digest(path: Path, start: int, stop: int) -> str:
    """sha256 of the rows ``[start, stop)`` a chunk file claims to hold and its bytes."""
    digest = _hasher(start, stop)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingFile:
    """A binary file that hashes what is written to it (``np.save`` target)."""

    def __init__(self, handle: Any, digest: Any) -> None:
        self.handle = handle
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def read_layout(folder: Path) -> dict[str, Any] | None:
    """``layout.json`` of a partial store, or None when missing or unreadable."""
    try:
        layout = json.loads((folder / LAYOUT).read_text())
    except (OSError, ValueError):
        return None
    return layout if isinstance(layout, dict) else None


class PartialStore:
    """An open ``<key16>.partial`` folder with a valid layout (use :func:`open_partial`);
    ``dim``: the feature width chunks must have (None: unknown)."""

    def __init__(
        self, folder: Path, layout: Layout, info: dict[str, Any], dim: int | None = None
    ) -> None:
        self.folder = folder
        self.layout = layout
        self.info = info
        self.dim = dim
        self._checked: dict[tuple[str, int, int], Chunk | str] = {}
        self._seen_mtime: int | None = None
        self._coverage: Coverage | None = None

    @property
    def claims_path(self) -> Path:
        return self.folder / CLAIMS

    @property
    def workers_dir(self) -> Path:
        return self.folder / "workers"

    # chunks -------------------------------------------------------------------------------

    def _check(self, path: Path) -> Chunk | str:
        """The chunk in ``path``, or why it cannot be trusted."""
        match = _CHUNK.match(path.name)
        if match is None:
            return "not a chunk file name"
        start, stop, digest = int(match[1]), int(match[2]), match[3]
        if self.layout.shard_range(start, stop) is None:
            return (
                f"rows {start}-{stop} do not fall on the recorded shard boundaries "
                f"({self.layout.shard_rows} rows a shard, {self.layout.n_rows} rows)"
            )
        if chunk_digest(path, start, stop)[:16] != digest:
            return "its bytes do not match the checksum in its name (truncated, edited or renamed)"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return f"unreadable ({exc})"
        if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != stop - start:
            return (
                f"holds {array.dtype} {tuple(array.shape)}, expected float32 "
                f"({stop - start}, D) for rows {start}-{stop}"
            )
        return Chunk(path, start, stop, int(array.shape[1]))

    def scan(self, *, discard: bool = True, verify: bool = True, note: Any = None) -> Coverage:
        """Validate the chunk files (each file once per process) and return the coverage.

        Chunks that fail validation are deleted when ``discard`` (``note(message)`` is
        told why); a repeated scan of an unchanged folder is free. Without ``verify``,
        chunks are counted from their names alone (no file is read or deleted; the
        coverage's ``dim`` is None): a quick look for status displays.
        """
        if not verify:
            return self._listed()
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if self._coverage is not None and mtime == self._seen_mtime:
            return self._coverage
        found: list[Chunk] = []
        for path in sorted(self.folder.glob("rows-*.npy")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            tag = (path.name, stat.st_size, stat.st_mtime_ns)
            if tag not in self._checked:
                self._checked[tag] = self._check(path)
            result = self._checked[tag]
            if isinstance(result, Chunk):
                found.append(result)
            elif discard:
                self._discard(path, result, note)
        coverage = self._resolve(found, discard, note)
        self._seen_mtime, self._coverage = mtime, coverage
        return coverage

    def _listed(self) -> Coverage:
        chunks = []
        for path in sorted(self.folder.glob("rows-*.npy")):
            match = _CHUNK.match(path.name)
            if match and self.layout.shard_range(int(match[1]), int(match[2])) is not None:
                chunks.append(Chunk(path, int(match[1]), int(match[2]), -1))
        kept, shards = [], {}
        for chunk in chunks:
            span = self.layout.shard_range(chunk.start, chunk.stop) or range(0)
            if not any(s in shards for s in span):
                kept.append(chunk)
                shards.update(dict.fromkeys(span, chunk))
        return Coverage(kept, shards, None)

    def _resolve(self, found: list[Chunk], discard: bool, note: Any) -> Coverage:
        """Keep the chunks of the right width (:attr:`dim`; when unknown, the one width
        all chunks share) that do not overlap an earlier one."""
        widths = {chunk.dim for chunk in found}
        dim = self.dim
        if dim is None:
            dim = widths.pop() if len(widths) == 1 else None
        kept: list[Chunk] = []
        shards: dict[int, Chunk] = {}
        for chunk in sorted(found, key=lambda c: (c.start, -c.stop, c.path.name)):
            span = self.layout.shard_range(chunk.start, chunk.stop) or range(0)
            if chunk.dim != dim:
                reason = (
                    f"its rows have {chunk.dim} features, the backbone gives {dim}"
                    if dim is not None
                    else "the chunks disagree on the number of features"
                )
            elif any(s in shards for s in span):
                reason = "it overlaps another chunk"
            else:
                kept.append(chunk)
                shards.update(dict.fromkeys(span, chunk))
                continue
            if discard:
                self._discard(chunk.path, reason, note)
        return Coverage(kept, shards, dim)

    def _discard(self, path: Path, reason: str, note: Any) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        if note is not None:
            note(f"features: discarded {path} ({reason}); its rows are extracted again.")

    def write_chunk(self, start: int, block: np.ndarray) -> Chunk:
        """Save the features ``block`` (R, D) of rows ``[start, start + R)`` atomically."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        stop = start + len(block)
        if self.layout.shard_range(start, stop) is None:
            raise ValueError(f"rows {start}-{stop} are not whole shards of {self.layout}")
        fd, tmp = temp_file(self.folder, ".chunk-")
        try:
            with os.fdopen(fd, "wb") as handle:
                hashing = _HashingFile(handle, _hasher(start, stop))
                np.lib.format.write_array(hashing, block, allow_pickle=False)  # type: ignore[arg-type]
            digest = hashing.digest.hexdigest()
            path = self.folder / chunk_name(start, stop, digest)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        chunk = Chunk(path, start, stop, block.shape[1])
        stat = path.stat()
        self._checked[(path.name, stat.st_size, stat.st_mtime_ns)] = chunk
        return chunk

    def read(self, coverage: Coverage) -> Iterator[tuple[Chunk, np.ndarray]]:
        """Each chunk of ``coverage`` with its array (memory-mapped), in row order."""
        for chunk in coverage.chunks:
            yield chunk, np.load(chunk.path, mmap_mode="r", allow_pickle=False)

    # parts and workers --------------------------------------------------------------------

    def mark_part(self, part: Part, rows: int, seconds: float) -> None:
        """Record that ``part`` is done."""
        atomic_write_json(
            self.folder / "parts" / f"part-{part.index}-of-{part.count}.json",
            {
                "part": str(part),
                "rows": rows,
                "seconds": seconds,
                "host": host_name(),
                "pid": os.getpid(),
                "finished": time.time(),
            },
        )

    def parts_done(self) -> list[str]:
        """The parts recorded as done (``"2/3"``, ...), in order."""
        found = []
        for path in (self.folder / "parts").glob("part-*-of-*.json"):
            match = re.match(r"part-(\d+)-of-(\d+)\.json$", path.name)
            if match:
                found.append((int(match[2]), int(match[1])))
        return [f"{index}/{count}" for count, index in sorted(found)]

    def workers(self, *, remove_gone: bool = False) -> list[WorkerInfo]:
        return list_workers(self.workers_dir, remove_gone=remove_gone)


def _valid_layout(info: dict[str, Any] | None, key: str, n_rows: int) -> tuple[Layout | None, str]:
    if info is None:
        return None, "it has no readable layout.json (an older or interrupted format)"
    if info.get("version") != LAYOUT_VERSION:
        return None, f"its layout has version {info.get('version')!r}, not {LAYOUT_VERSION}"
    if info.get("key") != key or info.get("n_rows") != n_rows:
        return None, "its layout names another store"
    shard_rows = info.get("shard_rows")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        return None, f"its layout has an invalid shard size {shard_rows!r}"
    return Layout(n_rows, shard_rows), ""


def open_partial(
    folder: Path,
    *,
    key: str,
    n_rows: int,
    shard_rows: int,
    recipe: dict[str, Any],
    dim: int | None = None,
    note: Any = None,
) -> PartialStore:
    """The partial store in ``folder``: the existing one if its layout is valid (its shard
    size wins over ``shard_rows``), else a new one with ``shard_rows`` rows a shard; ``dim``:
    the feature width its chunks must have (None: unknown).

    An invalid folder is renamed aside and deleted (``note`` says why). The caller holds
    the store lock (shared, at least), so no process deletes a valid folder meanwhile.
    """
    for _ in range(5):
        info = read_layout(folder)
        if folder.is_dir():
            layout, why = _valid_layout(info, key, n_rows)
            if layout is not None:
                assert info is not None
                if shard_rows != layout.shard_rows and note is not None:
                    note(
                        f"features: resuming {folder} with its own shard size "
                        f"({layout.shard_rows} rows, not {shard_rows})."
                    )
                return PartialStore(folder, layout, info, dim)
            if note is not None:
                note(f"features: discarded {folder}: {why}; extracting into a new one.")
            remove_folder(folder)
        info = {
            "version": LAYOUT_VERSION,
            "key": key,
            "n_rows": n_rows,
            "shard_rows": shard_rows,
            "recipe": recipe,
            "created": time.time(),
            "host": host_name(),
            "pid": os.getpid(),
        }
        tmp = temp_folder(folder.parent, f".{folder.name}.")
        atomic_write_json(tmp / LAYOUT, info)
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process created it first
            continue
        return PartialStore(folder, Layout(n_rows, shard_rows), info, dim)
    raise RuntimeError(f"{folder}: could not create a partial feature store")


def remove_folder(folder: Path) -> None:
    """Delete ``folder`` without a reader ever seeing it half-deleted: rename it to a hidden
    temporary name first (a concurrent remover loses the rename and does nothing)."""
    trash = folder.with_name(f".{folder.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
