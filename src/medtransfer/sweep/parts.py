"""Extraction parts: tasks that extract part ``i`` of ``N`` of the feature store some cells
read, before those cells run (``split_extraction`` in the grid; the planning is
:mod:`medtransfer.sweep.split`).

A part task is named by the store it fills and its part: its key is a hash of the store's
identity (:func:`store_identity`) and ``i/N``, so cells of any unit, stage or grid
that read one store share its parts. It runs
:func:`medtransfer.jobs.common.extract_feature_part` with the options of ``cell``, a cell
that reads the store (the same arguments the cell's job gives
:func:`~medtransfer.jobs.common.prepare_features`, hence exactly the store the cell reads).
It writes no record: its state (``done`` with the store's path) is its outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medtransfer.config import Roots
from medtransfer.fsutil import sha256_json
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.hashing import KEY_VERSION, json_value

if TYPE_CHECKING:
    from medtransfer.jobs.common import StoreRequest
    from medtransfer.jobs.options import DataOptions, JobData


@dataclass(frozen=True)
class PartTask:
    """Part ``index`` of ``count`` of the feature store that ``cell`` reads (``rows``
    images when planned), run with ``resources``."""

    key: str
    index: int
    count: int
    cell: Cell
    rows: int
    resources: dict[str, Any]
    label: str

    @property
    def short(self) -> str:
        """The first 8 hex digits of the key (``--only`` takes them)."""
        return self.key[:8]

    @property
    def where(self) -> str:
        """``FILE:LINE:COL`` of the grid entry of the cell that reads the store."""
        return self.cell.where

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cell": self.cell.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartTask:
        return cls(**{**data, "cell": Cell.from_json(data["cell"])})


def store_identity(request: StoreRequest) -> dict[str, Any]:
    """What the store of ``request`` depends on that is known before the model is loaded:
    the model options (the run's label aside; ``--norm`` resolved for the protocol), the
    dataset's rows, the preprocessing, the precision asked for and the pixel source. Two
    requests with one identity read one store."""
    model = {
        field.name: json_value(getattr(request.model, field.name))
        for field in dataclasses.fields(request.model)
        if field.name not in ("label", "norm")
    }
    return {
        "model": model,
        "normalization": request.model.normalization(request.protocol),
        "rows": request.data.manifest.rows_hash,
        "preprocessing": request.preprocessing.describe(),
        "precision": request.run.precision,
        "use_prepared": request.run.use_prepared,
    }


def part_task(
    request: StoreRequest, cell: Cell, index: int, count: int, resources: dict[str, Any]
) -> PartTask:
    """Part ``index`` of ``count`` of the store of ``request``, planned for ``cell``."""
    key = sha256_json(
        {"key_version": KEY_VERSION, "part": [index, count], "store": store_identity(request)}
    )
    described = request.preprocessing.describe()
    manifest = request.data.manifest
    label = (
        f"features part {index}/{count}: {request.model.model} {manifest.dataset} "
        f"{described['image_size']}px {described['resize']} ({len(manifest):,} images)"
    )
    return PartTask(key, index, count, cell, len(manifest), dict(resources), label)


def store_request(
    roots: Roots,
    protocol: str,
    options: tuple[Any, ...],
    open_data: Callable[[DataOptions], JobData] | None = None,
) -> StoreRequest:
    """The store a run of ``protocol`` with ``options`` (its job's resolved option groups)
    reads; ``open_data`` opens its dataset (default: ``DataOptions.open(roots)``), as the
    job does: ``--uncertain original`` resolved for the protocol, the preprocessing of
    :func:`~medtransfer.jobs.features.protocol_preprocessing`."""
    from medtransfer.jobs.common import StoreRequest
    from medtransfer.jobs.features import protocol_preprocessing
    from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions

    groups = (DataOptions, ModelOptions, RunOptions)
    data = next(o for o in options if isinstance(o, DataOptions)).for_protocol(protocol)
    model = next(o for o in options if isinstance(o, ModelOptions))
    run = next(o for o in options if isinstance(o, RunOptions))
    own = next(o for o in options if not isinstance(o, groups))
    opened = open_data(data) if open_data is not None else data.open(roots)
    preprocessing = protocol_preprocessing(
        protocol, opened.spec, own.image_size, getattr(own, "resize", None)
    )
    return StoreRequest(protocol, opened, model, preprocessing, run)


def extract_part_now(roots: Roots, part: PartTask, options: tuple[Any, ...]) -> dict[str, Any]:
    """Run ``part`` here (``options``: its cell's resolved options); prints what it did
    and returns the state keys of its outcome: ``store`` (the complete store, or where it
    will be), ``merged`` (this part completed the store), rows extracted and reused."""
    from medtransfer.features.layout import Part
    from medtransfer.jobs.common import extract_feature_part

    request = store_request(roots, part.cell.protocol, options)
    result = extract_feature_part(roots, request, Part(part.index, part.count))
    print("\n".join(result.lines()))
    return {
        "store": str(result.status.path),
        "merged": result.merged,
        "rows_computed": result.rows_computed,
        "rows_reused": result.rows_reused,
    }
