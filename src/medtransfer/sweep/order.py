"""The order cells run in: by stage, then in units of cells that read the same features.

A unit is the cells of one stage that share a reuse key (model, weights, input handling,
dataset, preprocessing, precision, pixel source: see
:func:`~medtransfer.sweep.hashing.reuse_key`) and their Slurm resources. One worker (or
one array task) runs a unit's cells one after another, so the first extracts the
features and the others read them from the store; units run in parallel. Cells that
read no features are units of their own.

A unit may also list extraction parts (:mod:`medtransfer.sweep.parts`): the parts of the
stores its cells read when the grid splits their extraction
(:func:`medtransfer.sweep.split.plan_splits`). The unit runs them (or waits for whoever
runs them) before its first cell. A unit with parts and no cells is one part scheduled on
its own, ahead of the units that need it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from medtransfer.fsutil import sha256_json
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.parts import PartTask


@dataclass(frozen=True)
class Unit:
    """Cells run one after another by one worker, after the extraction ``parts`` they
    wait for; ``key`` names the unit (its lock) and depends only on what its cells share,
    not on which of them are left to run."""

    key: str
    stage: int
    resources: dict[str, Any]
    cells: tuple[Cell, ...]
    parts: tuple[PartTask, ...] = ()

    @property
    def label(self) -> str:
        """The unit for people: its first cell, or its only part."""
        if self.cells:
            more = f" and {len(self.cells) - 1} more cell(s)" if len(self.cells) > 1 else ""
            return f"{self.cells[0].label}{more}"
        return self.parts[0].label if self.parts else "an empty unit"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "resources": self.resources,
            "cells": [cell.to_json() for cell in self.cells],
            "parts": [part.to_json() for part in self.parts],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        cells = tuple(Cell.from_json(c) for c in data["cells"])
        parts = tuple(PartTask.from_json(p) for p in data.get("parts", ()))
        return cls(data["key"], data["stage"], data["resources"], cells, parts)


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
