"""The order cells run in: by stage, then in units of cells that read the same features.

A unit is the cells of one stage that share a reuse key (model, weights, input handling,
dataset, preprocessing, precision, pixel source: see
:func:`~medtransfer.sweep.hashing.reuse_key`) and their Slurm resources. One worker (or
one array task) runs a unit's cells one after another, so the first extracts the
features and the others read them from the store; units run in parallel. Cells that
read no features are units of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from medtransfer.fsutil import sha256_json
from medtransfer.sweep.cells import Cell


@dataclass(frozen=True)
class Unit:
    """Cells run one after another by one worker; ``key`` names the unit (its lock) and
    depends only on what its cells share, not on which of them are left to run."""

    key: str
    stage: int
    resources: dict[str, Any]
    cells: tuple[Cell, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "resources": self.resources,
            "cells": [cell.to_json() for cell in self.cells],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        cells = tuple(Cell.from_json(c) for c in data["cells"])
        return cls(data["key"], data["stage"], data["resources"], cells)


def make_units(cells: Iterable[Cell]) -> list[Unit]:
    """``cells`` in units: stages in increasing order; within a stage, units in the order
    their first cell appears, and each unit's cells in their given order."""
    groups: dict[tuple[int, str], list[Cell]] = {}
    for cell in cells:
        resources = sha256_json(cell.resources)
        group = (cell.stage, f"{cell.reuse or cell.key}:{resources}")
        groups.setdefault(group, []).append(cell)
    ordered = sorted(groups.items(), key=lambda item: item[0][0])  # stable within a stage
    return [
        Unit(
            key=sha256_json([stage, group])[:16],
            stage=stage,
            resources=members[0].resources,
            cells=tuple(members),
        )
        for (stage, group), members in ordered
    ]


def stages(units: Iterable[Unit]) -> list[list[Unit]]:
    """``units`` split by stage, in increasing order."""
    out: dict[int, list[Unit]] = {}
    for unit in units:
        out.setdefault(unit.stage, []).append(unit)
    return [out[stage] for stage in sorted(out)]
