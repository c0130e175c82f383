"""Where a feature store stands: complete, partial (which parts, rows done), damaged or
absent; read without taking any lock and without running anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.features.complete import open_complete
from medtransfer.features.layout import Layout
from medtransfer.features.locks import WorkerInfo
from medtransfer.features.partial import LAYOUT_VERSION, PartialStore, read_layout


@dataclass(frozen=True)
class StoreStatus:
    """Where a store stands.

    ``state``: ``complete``, ``partial``, ``damaged`` (a complete-looking folder whose
    features do not match its ``meta.json``) or ``absent``; ``path``: the complete store
    (or where it will be), ``partial``: the partial folder (None unless partial);
    ``rows_done`` of ``n_rows`` (None when unknown: absent); ``shard_rows`` /
    ``n_shards`` / ``shards_done``: the recorded layout and how much of it is saved
    (chunk files counted by name, not re-validated); ``parts_done``: parts recorded as
    done (``"2/3"``); ``workers``: processes working on it now; ``dim``: feature width
    (complete stores).
    """

    state: str
    key: str
    path: Path
    partial: Path | None = None
    n_rows: int | None = None
    rows_done: int = 0
    shard_rows: int | None = None
    n_shards: int | None = None
    shards_done: int = 0
    parts_done: list[str] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    dim: int | None = None

    def describe(self) -> str:
        """One line for people."""
        if self.state == "complete":
            return f"complete: {self.n_rows:,} rows x {self.dim} features in {self.path}"
        if self.state == "damaged":
            return f"damaged: {self.path} (the next extraction replaces it)"
        if self.state == "absent":
            return f"absent: nothing extracted yet (it will be {self.path})"
        parts = f"; parts done: {', '.join(self.parts_done)}" if self.parts_done else ""
        live = [w for w in self.workers if w.alive]
        working = f"; {len(live)} process(es) extracting" if live else ""
        return (
            f"partial: {self.rows_done:,} of {self.n_rows:,} rows ({self.shards_done} of "
            f"{self.n_shards} shards of {self.shard_rows} rows){parts}{working} in {self.partial}"
        )

    def lines(self) -> list[str]:
        """``store: <describe()>`` and a line per process working on the store."""
        working = [f"  working: {worker.describe()}" for worker in self.workers]
        return [f"store: {self.describe()}", *working]


def store_status(store_root: Path, key: str) -> StoreStatus:
    """Where the store ``key`` under ``store_root`` stands (see :class:`StoreStatus`)."""
    root = Path(store_root)
    final, partial_dir = root / key[:16], root / f"{key[:16]}.partial"
    try:
        features = open_complete(final)
    except FileNotFoundError:
        pass
    except ValueError:
        return StoreStatus("damaged", key, final)
    else:
        n_rows, dim = features.shape
        return StoreStatus("complete", key, final, n_rows=n_rows, rows_done=n_rows, dim=dim)
    info = read_layout(partial_dir)
    if info is None or info.get("key") != key or info.get("version") != LAYOUT_VERSION:
        return StoreStatus("absent", key, final)  # nothing a run would resume
    try:
        layout = Layout(int(info["n_rows"]), int(info["shard_rows"]))
    except (KeyError, TypeError, ValueError):
        return StoreStatus("absent", key, final)
    partial = PartialStore(partial_dir, layout, info)
    coverage = partial.scan(verify=False)
    return StoreStatus(
        "partial",
        key,
        final,
        partial=partial_dir,
        n_rows=partial.layout.n_rows,
        rows_done=coverage.rows,
        shard_rows=partial.layout.shard_rows,
        n_shards=partial.layout.n_shards,
        shards_done=len(coverage.shards),
        parts_done=partial.parts_done(),
        workers=partial.workers(),
    )
