"""Splitting a feature extraction too large for one task (``split_extraction`` in the grid).

**Planning** (:func:`plan_splits`). For each cell that reads stored features and whose grid
entry sets ``split_extraction: {min_images, parts}``, the sweep opens the cell's dataset as
its job will (the manifest: once per dataset and data options; manifests are cached) and
names the store the cell reads (:func:`~medtransfer.sweep.parts.store_request`). A store
whose dataset has at least ``min_images`` rows gets ``parts`` extraction part tasks (the
largest ``parts`` among the cells asking, the resources of the first cell asking with its
``split_extraction.slurm`` over them). Every cell that reads a split store, asking or not,
waits for its parts. A dataset that cannot be opened here (not there yet, or broken) is
not split; :attr:`SplitPlan.notes` say so, and its cells fail or succeed on their own.

**Scheduling** (:func:`schedule`). Each part left to run becomes a unit of its own, placed
first in the stage of the earliest unit that needs it, so the parts run in parallel
(separate local workers, separate array tasks with their own resources); every unit lists
the parts of its cells and runs them, or waits for whoever runs them, before its first
cell (:func:`medtransfer.sweep.runner.run_unit`). On Slurm the arrays of units that need
parts also depend (``afterany``) on the part arrays, so they queue without holding an
allocation. The last part to finish completes the store, and the cells then read it
without a forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.errors import MedTransferError
from medtransfer.fsutil import sha256_json
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.order import Unit
from medtransfer.sweep.parts import PartTask, part_task, store_identity, store_request

if TYPE_CHECKING:
    from medtransfer.jobs.common import StoreRequest
    from medtransfer.jobs.options import DataOptions, JobData


@dataclass(frozen=True)
class SplitPlan:
    """``parts_of``: cell key -> the part tasks of the store it reads (cells whose store is
    not split are absent); ``notes``: datasets that could not be sized, in words."""

    parts_of: dict[str, tuple[PartTask, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def parts(self) -> list[PartTask]:
        """Every part task, each once, in the order of the cells that read them."""
        seen: dict[str, PartTask] = {}
        for parts in self.parts_of.values():
            for part in parts:
                seen.setdefault(part.key, part)
        return list(seen.values())

    def of(self, cells: Iterable[Cell]) -> tuple[PartTask, ...]:
        """The parts ``cells`` wait for, each once."""
        seen: dict[str, PartTask] = {}
        for cell in cells:
            for part in self.parts_of.get(cell.key, ()):
                seen.setdefault(part.key, part)
        return tuple(seen.values())


@dataclass
class _Store:
    """One store that cells read, while planning."""

    request: StoreRequest
    readers: list[Cell]
    asking: list[Cell] = field(default_factory=list)  # cells whose threshold it meets


def _opener(roots: Roots) -> Callable[[DataOptions], JobData]:
    """``DataOptions.open`` that tries each data options once: a dataset that failed to
    open fails again at once (successes are shared by :func:`sharing_data`)."""
    failed: dict[DataOptions, MedTransferError] = {}

    def open_data(data: DataOptions) -> JobData:
        if data in failed:
            raise failed[data]
        try:
            return data.open(roots)
        except MedTransferError as exc:
            failed[data] = exc
            raise

    return open_data


def plan_splits(roots: Roots, cells: Sequence[Cell]) -> SplitPlan:
    """The extraction parts of ``cells`` (module docstring); opens nothing when no cell
    asks for a split, and each dataset once."""
    asked = {c.raw.get("dataset") for c in cells if c.split is not None}
    readers = [c for c in cells if c.reuse is not None and c.raw.get("dataset") in asked]
    readers = [c for c in readers if _reads_store(c)]
    if not readers:
        return SplitPlan()
    from medtransfer.jobs.options import sharing_data

    with sharing_data():
        return _plan(roots, readers)


def _plan(roots: Roots, readers: Sequence[Cell]) -> SplitPlan:
    opener = _opener(roots)
    stores: dict[str, _Store] = {}
    notes: dict[str, None] = {}
    for cell in readers:
        try:
            request = store_request(roots, cell.protocol, cell.options(), opener)
            identity = sha256_json(store_identity(request))
        except MedTransferError as exc:
            if cell.split is not None:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                notes.setdefault(
                    f"{cell.raw['dataset']}: not sized here, so its feature extraction is not "
                    f"split ({first})"
                )
            continue
        store = stores.setdefault(identity, _Store(request, []))
        store.readers.append(cell)
        if cell.split is not None and len(request.data.manifest) >= cell.split["min_images"]:
            store.asking.append(cell)
    parts_of: dict[str, tuple[PartTask, ...]] = {}
    for store in stores.values():
        if not store.asking:
            continue
        first = store.asking[0]
        count = max(cell.split["parts"] for cell in store.asking if cell.split)
        resources = {**first.resources, **(first.split or {}).get("slurm", {})}
        parts = tuple(
            part_task(store.request, first, index, count, resources)
            for index in range(1, count + 1)
        )
        for cell in store.readers:
            parts_of[cell.key] = parts
    return SplitPlan(parts_of, tuple(notes))


def _reads_store(cell: Cell) -> bool:
    from medtransfer.jobs.features import FEATURE_PROTOCOLS

    return cell.protocol in FEATURE_PROTOCOLS


def part_unit(part: PartTask, stage: int) -> Unit:
    """``part`` as a unit of its own in ``stage``."""
    return Unit(sha256_json(["part", part.key])[:16], stage, part.resources, (), (part,))


def schedule(
    units: Sequence[Unit],
    plan: SplitPlan,
    to_run: Callable[[PartTask], bool],
    alone: Sequence[PartTask] = (),
) -> list[Unit]:
    """``units`` (stage order) with the parts of their cells, and a unit for each part
    that ``to_run`` accepts, first in the stage of the earliest unit that needs it;
    ``alone``: parts to run without any cell (``--only`` a part), in their cell's stage."""
    units = [replace(unit, parts=plan.of(unit.cells)) for unit in units]
    stage_of: dict[str, tuple[int, PartTask]] = {}
    for unit in units:
        for part in unit.parts:
            if part.key not in stage_of or unit.stage < stage_of[part.key][0]:
                stage_of[part.key] = (unit.stage, part)
    for part in alone:
        stage_of.setdefault(part.key, (part.cell.stage, part))
    extra = [part_unit(part, stage) for stage, part in stage_of.values() if to_run(part)]
    return sorted([*extra, *units], key=lambda unit: unit.stage)  # stable: parts first


def part_store(state: dict[str, Any] | None) -> Path | None:
    """Where a done part's store is (its state says), if it says."""
    store = (state or {}).get("store")
    return Path(store) if isinstance(store, str) else None
