"""A grid cell: one job run with one set of options, and how its options are rebuilt in
whichever process runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.jobs.registry import get_job
from medtransfer.sweep.values import coerce, option_fields


@dataclass(frozen=True)
class Cell:
    """One run of a grid.

    ``protocol``: the job's name; ``raw``: the option values the grid sets, as written
    (field name -> YAML value; model and dataset names canonical, paths absolute), over
    which ``preset`` and the defaults apply; ``stage``: cells of a stage run after every
    earlier stage has finished; ``resources``: the Slurm resources of its task; ``where``:
    ``FILE:LINE:COL`` of the grid entry it comes from; ``key``: the cell key
    (:func:`~medtransfer.sweep.hashing.cell_key`); ``reuse``: the reuse key of the features
    it reads (None: it reads none); ``label``: the cell for people (protocol, model,
    dataset, the settings that change its result); ``split``: the grid's
    ``split_extraction`` for it (``{"min_images", "parts", "slurm"}``; None: its feature
    extraction is never split). Neither ``label`` nor ``split`` changes the cell's result,
    so neither is in its key.
    """

    protocol: str
    raw: dict[str, Any]
    preset: str
    stage: int
    resources: dict[str, Any]
    where: str
    key: str
    reuse: str | None
    label: str = field(default="", compare=False)
    split: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def short(self) -> str:
        """The first 8 hex digits of the key (``--only`` takes them)."""
        return self.key[:8]

    def options(self, extra: dict[str, Any] | None = None) -> tuple[Any, ...]:
        """The options the job's ``run`` takes, built from ``raw`` (plus ``extra`` values for
        fields the grid leaves unset and the job has) over the preset over the defaults."""
        job = get_job(self.protocol)
        fields = option_fields(job)
        given = {name: coerce(fields[name], value, Path("/")) for name, value in self.raw.items()}
        for name, value in (extra or {}).items():
            if name in fields and name not in given:
                given[name] = value
        return job.resolve(given, self.preset)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)
