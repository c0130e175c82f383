"""The feature store: each image goes through a frozen backbone once, even across processes.

A complete store lives in ``<cache>/features/<model>/<dataset>/<key16>/`` (:mod:`.complete`):
``features.npy`` (N, D) float32, read back memory-mapped; ``rows.csv``, the manifest rows in
the same order; ``meta.json``, the key's ingredients, shape, shard layout and timings.

The key is a hash of (weights sha256, input normalisation, architecture, the manifest's
items in order (not its labels or splits, so every split and label policy of a dataset
shares one extraction), the image files' sizes and modification times, where the pixels
come from, preprocessing, the effective precision of the forward passes). A complete store
is only ever made by renaming a finished temporary folder, so a crash never leaves one that
looks complete; one whose features do not have the shape its ``meta.json`` records is
damaged, and is extracted again.

**Resuming.** Extraction writes into ``<key16>.partial/`` (:mod:`.partial`): the rows are
cut into shards of ``shard_rows`` rows (default: one batch, ``batch_size``), recorded in
its ``layout.json`` when it is created; every later run, whatever ``shard_rows`` it asks
for, resumes with the recorded layout. Finished shards are saved (as checksummed chunk
files) every ``flush_seconds`` (:data:`~.extraction.FLUSH_SECONDS`), at the end, and when
a run stops on an error or an interrupt, so an interrupt loses at most the last
``flush_seconds`` of work plus the batch in flight, and about a minute after a ``kill -9``.
Every chunk is validated before it is trusted (rows on shard boundaries, checksum, shape,
dtype); what fails is deleted and computed again, never filled in. A re-run prints how many
rows it reused and returns the count in :attr:`FeatureSet.rows_reused`.

**Several processes.** Processes that need the same store share the work instead of
repeating it (:mod:`.locks`): each holds the store lock ``<key16>.lock`` shared while it
extracts and claims each shard before computing it, so no shard is computed twice at once;
a process whose remaining shards are all claimed waits for them (a holder killed with
``kill -9`` releases its claims, and the shard is computed by whoever is still running).
Once every shard is saved, one process takes the lock exclusively, builds the complete
store under a temporary name, renames it, and deletes the partial folder. :func:`extract_part`
computes only part ``i`` of ``N`` of the shards (``--part i/N``), and whichever part finds
every shard saved finishes the store.

**Clean-up.** Before extracting, the leftovers of runs that died in the same folder are
removed, never while a live process holds their lock: temporary build folders, partial
stores whose complete store exists, partial stores of the same backbone, preprocessing and
precision whose dataset rows or files have changed since (they can never be resumed),
partial stores untouched for 30 days, and lock files without a partial store
(:mod:`.cleanup`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.data.manifest import Manifest
from medtransfer.data.prepare import PixelSource, original_pixels
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.cleanup import clean_leftovers
from medtransfer.features.complete import is_complete, open_complete, write_complete
from medtransfer.features.extraction import FLUSH_SECONDS, Forward, compute_shards, extract
from medtransfer.features.layout import Part
from medtransfer.features.locks import POLL_SECONDS, FileLock, WorkerFile, try_exclusive
from medtransfer.features.partial import (
    LAYOUT_VERSION,
    PartialStore,
    open_partial,
    read_layout,
    remove_folder,
)
from medtransfer.features.status import StoreStatus, store_status
from medtransfer.fsutil import sha256_json
from medtransfer.progress import note as print_note

__all__ = [
    "FeatureSet",
    "PartResult",
    "StoreStatus",
    "extract",
    "extract_part",
    "feature_key",
    "get_features",
    "store_status",
]

STORE_VERSION = 1
#: Attempts to finish a store whose shards vanish between extraction and merge.
_ATTEMPTS = 3

Note = Callable[[str], None]


@dataclass(frozen=True)
class FeatureSet:
    """Features of every manifest row.

    ``features``: (N, D) float32 (memory-mapped); ``labels``: (N,) int64; ``computed``:
    whether this call ran forward passes (False when read from the store);
    ``seconds``: time spent extracting in this call; ``pixels``: where the images were
    decoded from (the original files or a pre-resized copy); ``rows_reused``: rows found
    already extracted in a partial store when this call started (an interrupted run's, or
    other processes'); ``rows_computed``: rows this call ran forward passes for.
    """

    features: np.ndarray
    labels: np.ndarray
    key: str
    path: Path
    computed: bool
    seconds: float
    pixels: dict[str, object]
    rows_reused: int = 0
    rows_computed: int = 0


@dataclass(frozen=True)
class PartResult:
    """What :func:`extract_part` did.

    ``shards``: the part's shard indices; ``rows``: rows in them; ``rows_computed``: rows
    this call ran forward passes for; ``rows_reused``: rows of the part already saved when
    it started; ``complete``: whether the whole store is complete now (this call or
    another process finished it); ``merged``: this call finished it; ``path``: the
    complete store, or the partial one; ``status``: the store as it stands now.
    """

    key: str
    part: Part
    shards: range
    rows: int
    rows_computed: int
    rows_reused: int
    seconds: float
    complete: bool
    merged: bool
    path: Path
    status: StoreStatus

    def summary(self) -> str:
        """One line for people: the part's shards, and rows extracted now and found saved."""
        if self.shards:
            span = f"shards {self.shards[0]}-{self.shards[-1]} ({self.rows:,} rows)"
        else:
            span = "nothing left" if self.complete else "no shard (more parts than shards)"
        return (
            f"part {self.part}: {span}: {self.rows_computed:,} extracted now, "
            f"{self.rows_reused:,} already there, {self.seconds:.1f} s"
        )

    def lines(self) -> list[str]:
        """What a part run says: :meth:`summary`, where the store stands now and, when this
        part completed it, that it did."""
        done = f"part {self.part} was the last to finish and completed the store."
        return [self.summary(), *self.status.lines(), *([done] if self.merged else [])]


def feature_key(
    weights_sha256: str,
    normalization: str,
    arch: str,
    manifest: Manifest,
    preprocessing: Preprocessing,
    pixels: PixelSource,
    precision: str = "fp32",
) -> str:
    """The store key: a sha256 over everything the features depend on."""
    recipe = feature_recipe(weights_sha256, normalization, arch, preprocessing, pixels, precision)
    return sha256_json({**recipe, "rows": manifest.rows_hash, "files": pixels.fingerprint})


def feature_recipe(
    weights_sha256: str,
    normalization: str,
    arch: str,
    preprocessing: Preprocessing,
    pixels: PixelSource,
    precision: str,
) -> dict[str, Any]:
    """The key's ingredients except the dataset's rows and files: two stores with the same
    recipe differ only because the data changed."""
    return {
        "version": STORE_VERSION,
        "weights_sha256": weights_sha256,
        "normalization": normalization,
        "arch": arch,
        "pixels": pixels.describe,
        "preprocessing": preprocessing.describe(),
        "precision": precision,
    }


@dataclass(frozen=True)
class _Request:
    """Everything one store request needs (built by :func:`_request`)."""

    manifest: Manifest
    pixels: PixelSource
    key: str
    recipe: dict[str, Any]
    root: Path
    forward: Forward
    shard_rows: int
    flush_seconds: float
    poll_seconds: float
    meta: dict[str, Any]
    note: Note
    dim: int | None

    @property
    def final(self) -> Path:
        return self.root / self.key[:16]

    @property
    def partial(self) -> Path:
        return self.root / f"{self.key[:16]}.partial"

    @property
    def lock(self) -> Path:
        return self.root / f"{self.key[:16]}.lock"

    @property
    def n_rows(self) -> int:
        return len(self.pixels.paths)

    def open_partial(self) -> PartialStore:
        """The partial store (:func:`~.partial.open_partial`); hold the store lock."""
        return open_partial(
            self.partial,
            key=self.key,
            n_rows=self.n_rows,
            shard_rows=self.shard_rows,
            recipe=self.recipe,
            dim=self.dim,
            note=self.note,
        )

    def feature_set(self, features: np.ndarray, **kwargs: Any) -> FeatureSet:
        return FeatureSet(
            features,
            self.manifest.labels,
            self.key,
            self.final,
            pixels=self.pixels.describe,
            **kwargs,
        )


def _request(
    backbone: torch.nn.Module,
    manifest: Manifest,
    preprocessing: Preprocessing,
    store_root: Path,
    *,
    weights_sha256: str,
    normalization: str,
    arch: str,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    shard_rows: int | None = None,
    pixels: PixelSource | None = None,
    precision: str = "fp32",
    flush_seconds: float = FLUSH_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    note: Note | None = None,
) -> _Request:
    """The request of :func:`get_features` (its arguments, same defaults)."""
    pixels = pixels or original_pixels(manifest)
    recipe = feature_recipe(weights_sha256, normalization, arch, preprocessing, pixels, precision)
    key = feature_key(
        weights_sha256, normalization, arch, manifest, preprocessing, pixels, precision
    )
    forward = Forward(
        backbone,
        pixels.paths,
        preprocessing,
        pixels.loader,
        device,
        batch_size,
        workers,
        precision,
        progress,
        f"features of {manifest.dataset}",
    )
    meta = {
        "key": key,
        "dataset": manifest.dataset,
        "manifest_hash": manifest.hash,
        "weights_sha256": weights_sha256,
        "normalization": normalization,
        "arch": arch,
        "preprocessing": preprocessing.describe(),
        "pixels": pixels.describe,
        "precision": precision,
        "device": device,
    }
    return _Request(
        manifest=manifest,
        pixels=pixels,
        key=key,
        recipe=recipe,
        root=Path(store_root),
        forward=forward,
        shard_rows=shard_rows or max(1, batch_size),
        flush_seconds=flush_seconds,
        poll_seconds=poll_seconds,
        meta=meta,
        note=note or print_note,
        dim=getattr(backbone, "feature_dim", None),
    )


def _read_complete(request: _Request) -> np.ndarray | None:
    """The complete store's features, or None (absent or damaged, which is said)."""
    try:
        return open_complete(request.final)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        request.note(f"features: {request.final} is damaged ({exc}); extracting again.")
        return None


# extraction and merging -------------------------------------------------------------------


@contextlib.contextmanager
def _working(request: _Request, label: str) -> Iterator[PartialStore | None]:
    """The partial store, with the store lock held shared and this process's worker file
    in place; None when the complete store appeared meanwhile."""
    lock = FileLock(request.lock)
    if not lock.acquire(
        exclusive=False,
        poll=request.poll_seconds,
        on_wait=lambda: is_complete(request.final),
    ):
        yield None
        return
    try:
        if is_complete(request.final):
            yield None
            return
        partial = request.open_partial()
        partial.workers(remove_gone=True)
        with WorkerFile(partial.workers_dir, label):
            yield partial
    finally:
        lock.release()


#: What :func:`_finish` found: it built the store, another process had, or shards are missing.
MERGED, DONE, MISSING = "merged", "done", "missing"


def _finish(request: _Request, seconds: float) -> str:
    """Build the complete store from the partial one if every shard is saved: returns
    :data:`MERGED`, :data:`DONE` (another process built it) or :data:`MISSING`."""
    lock = FileLock(request.lock)
    if not lock.acquire(
        exclusive=True,
        poll=request.poll_seconds,
        on_wait=lambda: is_complete(request.final),
    ):
        return DONE  # another process finished it while we waited
    finished = False
    try:
        if is_complete(request.final):
            finished = True
            return DONE
        info = read_layout(request.partial)
        if info is None or info.get("key") != request.key or info.get("version") != LAYOUT_VERSION:
            return MISSING
        partial = request.open_partial()
        coverage = partial.scan(note=request.note)
        if len(coverage.shards) < partial.layout.n_shards:
            return MISSING
        if request.final.exists():
            remove_folder(request.final)  # damaged
        meta = {
            **request.meta,
            "shard_rows": partial.layout.shard_rows,
            "chunks": len(coverage.chunks),
            "parts_done": partial.parts_done(),
            "extraction_seconds": seconds,
        }
        write_complete(request.final, partial, coverage, request.manifest.table, meta)
        remove_folder(request.partial)
        finished = True
        return MERGED
    finally:
        lock.release(delete=finished)


def _fast_path(request: _Request) -> np.ndarray | None:
    """The complete store's features if there is one; removes its leftover partial folder
    (a merger that died between the rename and the clean-up)."""
    features = _read_complete(request)
    if features is not None and request.partial.exists():
        with try_exclusive(request.lock) as free:
            if free is not None:
                remove_folder(request.partial)
                free.release(delete=True)
    return features


def get_features(
    backbone: torch.nn.Module,
    manifest: Manifest,
    preprocessing: Preprocessing,
    store_root: Path,
    *,
    weights_sha256: str,
    normalization: str,
    arch: str,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    shard_rows: int | None = None,
    pixels: PixelSource | None = None,
    precision: str = "fp32",
    flush_seconds: float = FLUSH_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    note: Note | None = None,
) -> FeatureSet:
    """Features of every row of ``manifest``, from the store or extracted now (once).

    ``pixels`` says where the images are decoded from: the dataset's own files (default) or
    a pre-resized copy (:func:`medtransfer.data.prepare.prepared_pixels`); ``precision`` is
    the effective precision of the forward passes (part of the key: features computed in
    bf16 are never handed to an fp32 run). ``shard_rows`` (default ``batch_size``) is the
    shard size of a new partial store (an existing one keeps its own); ``flush_seconds``:
    how often finished shards are saved; ``poll_seconds``: how often a process waiting on
    another one looks again; ``note``: where messages for people go (stderr).
    Concurrent calls from several processes share the work (module docstring).
    """
    request = _request(
        backbone,
        manifest,
        preprocessing,
        store_root,
        weights_sha256=weights_sha256,
        normalization=normalization,
        arch=arch,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        shard_rows=shard_rows,
        pixels=pixels,
        precision=precision,
        flush_seconds=flush_seconds,
        poll_seconds=poll_seconds,
        note=note,
    )
    features = _fast_path(request)
    if features is not None:
        return request.feature_set(features, computed=False, seconds=0.0)
    clean_leftovers(request.root, keep=request.key, recipe=request.recipe)
    started = time.perf_counter()
    reused = computed = 0
    for attempt in range(_ATTEMPTS):
        with _working(request, "all") as partial:
            if partial is not None:
                if attempt == 0:
                    reused = partial.scan(note=request.note).rows
                    _say_resumed(request, partial, reused)
                shards = range(partial.layout.n_shards)
                computed += compute_shards(
                    request.forward,
                    partial,
                    shards,
                    flush_seconds=request.flush_seconds,
                    poll_seconds=request.poll_seconds,
                    note=request.note,
                )
        if _finish(request, time.perf_counter() - started) != MISSING:
            break
    else:  # pragma: no cover - only if shards keep disappearing
        raise RuntimeError(
            f"{request.partial}: shards keep disappearing; is another tool deleting them?"
        )
    features = open_complete(request.final)
    seconds = time.perf_counter() - started
    return request.feature_set(
        features,
        computed=computed > 0,
        seconds=seconds,
        rows_reused=reused,
        rows_computed=computed,
    )


def _say_resumed(request: _Request, partial: PartialStore, reused: int) -> None:
    if reused:
        request.note(
            f"features: resuming {partial.folder}: {reused:,} of {request.n_rows:,} rows "
            f"already extracted are reused; {request.n_rows - reused:,} to go."
        )


def extract_part(
    backbone: torch.nn.Module,
    manifest: Manifest,
    preprocessing: Preprocessing,
    store_root: Path,
    part: Part,
    **options: Any,
) -> PartResult:
    """Extract part ``part`` of the store :func:`get_features` builds with the same
    arguments (``options``: its keyword arguments, same defaults): the shards
    :meth:`~.layout.Layout.part` assigns to the part (shards another process holds are
    waited for), then record the part as done. If every shard of the store is saved then,
    finish the store (whichever part ends last does). Returns what was done and where the
    store stands.
    """
    request = _request(backbone, manifest, preprocessing, store_root, **options)
    forward = replace(request.forward, description=f"{request.forward.description}, part {part}")
    started = time.perf_counter()
    shards, rows, reused, computed, everything = range(0), 0, 0, 0, False
    if _fast_path(request) is None:
        clean_leftovers(request.root, keep=request.key, recipe=request.recipe)
        with _working(request, str(part)) as partial:
            if partial is not None:
                shards = partial.layout.part(part)
                rows = partial.layout.shard_rows_of(shards)
                saved = partial.scan(note=request.note).shards
                reused = partial.layout.shard_rows_of([s for s in shards if s in saved])
                computed = compute_shards(
                    forward,
                    partial,
                    shards,
                    flush_seconds=request.flush_seconds,
                    poll_seconds=request.poll_seconds,
                    note=request.note,
                )
                partial.mark_part(part, rows, time.perf_counter() - started)
                coverage = partial.scan(note=request.note)
                everything = len(coverage.shards) == partial.layout.n_shards
    merged = everything and _finish(request, time.perf_counter() - started) == MERGED
    status = store_status(request.root, request.key)
    return PartResult(
        key=request.key,
        part=part,
        shards=shards,
        rows=rows,
        rows_computed=computed,
        rows_reused=reused,
        seconds=time.perf_counter() - started,
        complete=status.state == "complete",
        merged=merged,
        path=status.partial or status.path,
        status=status,
    )
