"""Forward passes: images in, features out, saved into a partial store as they are made.

:func:`compute_shards` runs the backbone over the shards of a partial store that are not
saved yet, in one pass of a DataLoader:

* a shard is claimed (:class:`~medtransfer.features.locks.Claims`) just before its rows are
  queued, and skipped when another process holds it or has saved it meanwhile; shards
  held by others are waited for at the end (a holder that dies releases its claim, and the
  shard is then computed here);
* batches are ``batch_size`` rows cut at multiples of ``batch_size`` (counted from row 0)
  and at gaps between the rows queued, so with the default layout (a shard is one batch)
  every process, whatever part it computes, forms the same batches: the features are the
  same bits as a single-process extraction;
* finished shards are saved as one chunk file when ``flush_seconds`` have passed since the
  last save, when ``FLUSH_BYTES`` of features wait in memory, when the pass ends, and when
  it stops on an error or an interrupt; a ``kill -9`` loses at most ``flush_seconds`` plus
  the batches in flight.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medtransfer.compute import autocast, is_cuda
from medtransfer.data.images import load_image
from medtransfer.data.transforms import ImageFiles, Preprocessing
from medtransfer.errors import MedTransferError
from medtransfer.features.layout import Layout
from medtransfer.features.locks import Claims
from medtransfer.features.partial import PartialStore
from medtransfer.progress import progress as progress_display

#: Seconds of forward passes between two saves of finished shards.
FLUSH_SECONDS = 30.0
#: Features waiting in memory that force a save (bytes).
FLUSH_BYTES = 256 << 20

Note = Callable[[str], None]


@dataclass(frozen=True)
class Forward:
    """What the forward passes need: the ``backbone``, one item path per row (``paths``) and
    the ``loader`` that decodes one, the ``preprocessing``, and where and how to compute."""

    backbone: torch.nn.Module
    paths: Sequence[Path]
    preprocessing: Preprocessing
    loader: Callable[[Path], Image.Image] = load_image
    device: str = "cpu"
    batch_size: int = 64
    workers: int = 0
    precision: str = "fp32"
    progress: bool = True
    description: str = "features"

    def data_loader(self, batches: object) -> torch.utils.data.DataLoader[torch.Tensor]:
        """A DataLoader over ``self.paths`` whose batches of row indices come from
        ``batches`` (an iterable of index lists)."""
        return torch.utils.data.DataLoader(
            ImageFiles(list(self.paths), self.preprocessing, self.loader),
            batch_sampler=batches,  # type: ignore[arg-type]
            num_workers=self.workers,
            pin_memory=is_cuda(self.device),
        )

    def run(self, images: torch.Tensor) -> np.ndarray:
        """One batch (B, 3, S, S) -> float32 features (B, D)."""
        output = self.backbone(images.to(self.device, non_blocking=True))
        return output.float().cpu().numpy()


def unwrap_worker_error(exc: MedTransferError) -> MedTransferError:
    """The user's message of an error re-raised by a DataLoader worker, without the traceback.

    A worker's exception comes back as the same type whose message is "Caught X in
    DataLoader worker process N. Original Traceback ...", ending in ``module.X: message``.
    """
    text = str(exc)
    if not text.startswith("Caught "):
        return exc
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last.removeprefix(prefix))


def _batches(start: int, stop: int, batch_size: int) -> Iterator[list[int]]:
    """Rows [start, stop) cut at multiples of ``batch_size``."""
    while start < stop:
        cut = min(stop, (start // batch_size + 1) * batch_size)
        yield list(range(start, cut))
        start = cut


def extract(
    backbone: torch.nn.Module,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    description: str = "features",
    loader: Callable[[Path], Image.Image] = load_image,
    precision: str = "fp32",
) -> np.ndarray:
    """Forward every image once, keeping nothing on disk: returns (len(paths), D) float32.

    The backbone is put in eval mode and run under ``torch.inference_mode`` in
    ``precision`` (an effective precision of :mod:`medtransfer.compute`). Images are decoded
    by ``workers`` processes.
    """
    forward = Forward(
        backbone, paths, preprocessing, loader, device, batch_size, workers, precision, progress
    )
    backbone.eval().to(device)
    chunks: list[np.ndarray] = []
    with (
        torch.inference_mode(),
        autocast(device, precision),
        progress_display(len(paths), description, "img", enabled=progress) as bar,
    ):
        try:
            for images in forward.data_loader(_batches(0, len(paths), batch_size)):
                chunks.append(forward.run(images))
                bar.update(len(images))
        except MedTransferError as exc:
            raise unwrap_worker_error(exc) from None
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


class _ClaimingBatches:
    """Batches of row indices over the ``shards`` not yet saved, claiming each shard as it
    is queued (a shard another process holds is left to it); ``queued`` holds the (start,
    stop) rows of each batch handed out, in order."""

    def __init__(
        self, shards: Sequence[int], partial: PartialStore, claims: Claims, batch_size: int
    ) -> None:
        self.shards = shards
        self.partial = partial
        self.claims = claims
        self.batch_size = batch_size
        self.queued: deque[tuple[int, int]] = deque()

    def _saved(self, shard: int) -> bool:
        return shard in self.partial.scan().shards

    def _take(self, shard: int) -> bool:
        if self._saved(shard):
            return False
        if not self.claims.claim(shard):
            return False
        if self._saved(shard):  # saved by its last holder just before we claimed it
            self.claims.release(shard)
            return False
        return True

    def _emit(self, start: int, stop: int) -> Iterator[list[int]]:
        for batch in _batches(start, stop, self.batch_size):
            self.queued.append((batch[0], batch[-1] + 1))
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        layout: Layout = self.partial.layout
        run: list[int] | None = None  # rows [start, stop) claimed and not yet batched
        for shard in self.shards:
            if not self._take(shard):
                continue
            start, stop = layout.rows(shard)
            if run is not None and run[1] != start:
                yield from self._emit(*run)
                run = None
            run = [run[0] if run else start, stop]
            cut = run[1] // self.batch_size * self.batch_size
            if cut > run[0]:
                yield from self._emit(run[0], cut)
                run[0] = cut
            if run[0] == run[1]:
                run = None
        if run is not None:
            yield from self._emit(*run)


class _Pending:
    """Features computed and not yet saved, per shard."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.pieces: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.filled: dict[int, int] = {}
        self.nbytes = 0

    def add(self, start: int, block: np.ndarray) -> None:
        """Features (R, D) of rows [start, start + R)."""
        offset = 0
        while offset < len(block):
            row = start + offset
            shard = row // self.layout.shard_rows
            take = min(self.layout.rows(shard)[1] - row, len(block) - offset)
            self.pieces.setdefault(shard, []).append((row, block[offset : offset + take]))
            self.filled[shard] = self.filled.get(shard, 0) + take
            offset += take
        self.nbytes += block.nbytes

    def save(self, partial: PartialStore, claims: Claims) -> None:
        """Save every finished shard (one chunk per run of consecutive ones) and release
        its claim once the chunk is in place."""
        finished = sorted(s for s, n in self.filled.items() if n == self.layout.shard_rows_of([s]))
        runs: list[list[int]] = []
        for shard in finished:
            if runs and runs[-1][-1] == shard - 1:
                runs[-1].append(shard)
            else:
                runs.append([shard])
        for run in runs:
            blocks = [
                piece for s in run for _, piece in sorted(self.pieces[s], key=lambda item: item[0])
            ]
            block = np.concatenate(blocks)
            partial.write_chunk(self.layout.rows(run[0])[0], block)
            for shard in run:
                del self.pieces[shard], self.filled[shard]
                claims.release(shard)
            self.nbytes -= block.nbytes


def _one_pass(
    forward: Forward,
    partial: PartialStore,
    claims: Claims,
    shards: Sequence[int],
    flush_seconds: float,
) -> int:
    """Compute the ``shards`` this process can claim; returns the rows computed."""
    batches = _ClaimingBatches(shards, partial, claims, forward.batch_size)
    pending = _Pending(partial.layout)
    total = partial.layout.shard_rows_of(list(shards))
    computed = 0
    last_save = time.monotonic()
    try:
        with (
            torch.inference_mode(),
            autocast(forward.device, forward.precision),
            progress_display(total, forward.description, "img", enabled=forward.progress) as bar,
        ):
            for images in forward.data_loader(batches):
                start, stop = batches.queued.popleft()
                block = forward.run(images)
                if len(block) != stop - start:
                    raise RuntimeError(
                        f"the backbone returned {len(block)} rows for {stop - start}"
                    )
                pending.add(start, block)
                computed += len(block)
                bar.update(len(block))
                if time.monotonic() - last_save >= flush_seconds or pending.nbytes >= FLUSH_BYTES:
                    pending.save(partial, claims)
                    last_save = time.monotonic()
        pending.save(partial, claims)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            pending.save(partial, claims)  # keep the finished shards of an interrupted pass
        if isinstance(exc, MedTransferError):
            raise unwrap_worker_error(exc) from None
        raise
    finally:
        for shard in list(claims.held):
            claims.release(shard)
    return computed


def compute_shards(
    forward: Forward,
    partial: PartialStore,
    shards: Sequence[int],
    *,
    flush_seconds: float = FLUSH_SECONDS,
    poll_seconds: float = 0.5,
    note: Note | None = None,
) -> int:
    """Make sure every shard in ``shards`` is saved in ``partial``: compute those no other
    process is computing, wait for the others (module docstring). Returns the rows this
    process computed."""
    forward.backbone.eval().to(forward.device)
    computed = 0
    told = False
    with Claims(partial.claims_path) as claims:
        while True:
            saved = partial.scan(note=note).shards
            todo = [s for s in shards if s not in saved]
            if not todo:
                return computed
            # Claim (and keep) the first free shard before starting decoding workers.
            if any(claims.claim(s) for s in todo):
                computed += _one_pass(forward, partial, claims, todo, flush_seconds)
                continue
            if not told and note is not None:
                workers = [w.describe() for w in partial.workers() if w.alive]
                held = f" ({'; '.join(workers)})" if workers else ""
                note(
                    f"features: waiting for {len(todo)} shard(s) that other processes are "
                    f"extracting{held}."
                )
                told = True
            time.sleep(poll_seconds)
