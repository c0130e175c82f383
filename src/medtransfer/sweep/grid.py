"""Grid files: the schema, its validation, and the expansion into cells.

A grid file (``docs/sweeps.md`` has the full schema) holds ``grid``, a list of blocks;
each block names a ``protocol`` (a registered job) and the axes ``models``, ``datasets``,
``seeds`` and ``vary`` (option -> values), whose product gives its cells; ``options``,
``when`` (overrides for the cells that match) and ``exclude`` shape them. Top-level
``defaults`` (options for every cell whose job has them), ``preset``, ``slurm`` (resources),
``split_extraction`` (from which dataset size a feature extraction is split into parts,
and into how many) and ``synthetic`` (run on synthetic trees) apply to every block.

:func:`load_grid` checks the whole file before anything runs and raises ONE
:class:`~medtransfer.sweep.source.GridError` that lists every problem with its
``FILE:LINE:COL``: unknown keys, protocols, models, datasets and options, values that do
not fit their option (type or choices, e.g. an unknown invariance transform), presets a
job does not offer, and option combinations a job refuses.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import MedTransferError
from medtransfer.jobs.base import PRESETS, Job
from medtransfer.jobs.features import FEATURE_PROTOCOLS
from medtransfer.jobs.registry import JOBS
from medtransfer.sweep.cells import Cell
from medtransfer.sweep.hashing import cell_key, reuse_key
from medtransfer.sweep.source import GridError, KeyPath, Located, load_located
from medtransfer.sweep.values import (
    OptionField,
    canonical_dataset,
    canonical_model,
    coerce,
    option_fields,
    suggest,
)

TOP_KEYS = (
    "name",
    "preset",
    "defaults",
    "slurm",
    "split_extraction",
    "synthetic",
    "grid",
    "anchors",
)
BLOCK_KEYS = (
    "protocol",
    "models",
    "datasets",
    "seeds",
    "vary",
    "preset",
    "options",
    "when",
    "exclude",
    "slurm",
    "split_extraction",
    "stage",
)
WHEN_KEYS = ("match", "options", "slurm", "split_extraction")
#: Keys of a ``split_extraction`` entry (``min_images`` and ``parts`` are required).
SPLIT_KEYS = ("min_images", "parts", "slurm")

#: Slurm resources a grid may set, with the types they take.
RESOURCES: dict[str, type | tuple[type, ...]] = {
    "partition": str,
    "gpus_per_node": int,
    "cpus_per_task": int,
    "mem_gb": (int, float),
    "timeout_min": int,
    "array_parallelism": int,
    "account": str,
    "qos": str,
    "constraint": str,
    "setup": list,
}
#: What a cell asks for when the grid says nothing.
DEFAULT_RESOURCES: dict[str, Any] = {
    "gpus_per_node": 1,
    "cpus_per_task": 4,
    "mem_gb": 16,
    "timeout_min": 120,
}
SYNTHETIC_KEYS: dict[str, int] = {"per_class": 12, "size": 48, "seed": 0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: A ``when`` entry that says nothing about ``split_extraction``.
_UNSET: Any = object()


@dataclass(frozen=True)
class Synthetic:
    """Run the grid on synthetic trees in the datasets' published layouts (written once
    into the cache, see :mod:`medtransfer.sweep.synthetic`)."""

    per_class: int = SYNTHETIC_KEYS["per_class"]
    size: int = SYNTHETIC_KEYS["size"]
    seed: int = SYNTHETIC_KEYS["seed"]


@dataclass(frozen=True)
class Grid:
    """A validated grid file: its ``cells`` in file order (a cell written twice is kept
    once; ``merged`` counts the repeats)."""

    file: Path
    name: str
    cells: tuple[Cell, ...]
    synthetic: Synthetic | None
    merged: int = 0

    @property
    def datasets(self) -> list[str]:
        """The datasets the cells read, in first-use order."""
        seen = [c.raw["dataset"] for c in self.cells if isinstance(c.raw.get("dataset"), str)]
        return list(dict.fromkeys(seen))


class _Problems:
    """Problems found so far, each with its place in the file."""

    def __init__(self, doc: Located) -> None:
        self.doc = doc
        self.items: dict[str, int] = {}
        self.count = 0  # problems found, counting repeats

    def add(self, path: KeyPath, message: str) -> None:
        self.count += 1
        self.items.setdefault(f"{self.doc.where(path)}: {message}", self.doc.line(path))

    def check(self) -> None:
        if self.items:
            lines = sorted(self.items, key=lambda text: self.items[text])
            raise GridError(
                f"{self.doc.file}: {len(lines)} problem(s); nothing was run.\n  "
                + "\n  ".join(lines)
            )


def load_grid(path: Path, jobs: Iterable[Job] | None = None) -> Grid:
    """Read, validate and expand the grid file ``path`` (``jobs``: the registered jobs).

    Raises:
        GridError: listing every problem of the file.
    """
    doc = load_located(Path(path).resolve())
    return _Reader(doc, tuple(JOBS if jobs is None else jobs)).grid()


class _Reader:
    """One pass over a grid document: checks everything, then expands the blocks."""

    def __init__(self, doc: Located, jobs: tuple[Job, ...]) -> None:
        self.doc = doc
        self.jobs = {job.name: job for job in jobs}
        self.base = doc.file.parent
        self.problems = _Problems(doc)

    # -- the top level -------------------------------------------------------------------
    def grid(self) -> Grid:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problems.add((), "a grid file is a mapping with at least a `grid:` list")
            self.problems.check()
        self._unknown_keys(data, (), TOP_KEYS)
        name = data.get("name", self.doc.file.stem)
        if not isinstance(name, str) or not _NAME.match(name):
            self.problems.add(("name",), "name: letters, digits, '.', '_' or '-' only")
        preset = self._preset(data.get("preset", "none"), ("preset",), None)
        defaults = self._defaults(data.get("defaults", {}))
        resources = {**DEFAULT_RESOURCES, **self._resources(data.get("slurm", {}), ("slurm",))}
        split = self._split(data.get("split_extraction"), ("split_extraction",))
        synthetic = self._synthetic(data.get("synthetic"))
        blocks = data.get("grid")
        cells: list[Cell] = []
        if not isinstance(blocks, list) or not blocks:
            self.problems.add(("grid",), "`grid:` must be a list of blocks (protocol, models, ...)")
        else:
            for index, block in enumerate(blocks):
                path: KeyPath = ("grid", index)
                if not isinstance(block, dict):
                    self.problems.add(path, "each grid entry is a mapping with a `protocol:`")
                    continue
                cells.extend(self._block(block, path, preset, defaults, resources, split))
        if synthetic is not None:
            self._check_synthetic(cells)
        self.problems.check()
        unique = {cell.key: cell for cell in reversed(cells)}
        kept = tuple(cell for cell in cells if unique.get(cell.key) is cell)
        return Grid(self.doc.file, str(name), kept, synthetic, len(cells) - len(kept))

    def _unknown_keys(self, data: dict[str, Any], path: KeyPath, known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                self.problems.add(
                    (*path, key),
                    f"unknown key {key!r}{suggest(key, known)}; keys here: {', '.join(known)}",
                )

    def _preset(self, value: Any, path: KeyPath, job: Job | None) -> str:
        if not isinstance(value, str) or value not in PRESETS:
            self.problems.add(path, f"preset {value!r} is not one of {', '.join(PRESETS)}")
            return "none"
        if job is not None and value != "none" and value not in job.presets:
            offered = ", ".join(["none", *job.presets])
            self.problems.add(path, f"{job.name} has no preset {value!r}; it offers: {offered}")
        return value

    def _defaults(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.add(("defaults",), "defaults: a mapping of option -> value")
            return {}
        known = {name for job in self.jobs.values() for name in option_fields(job)}
        for key in value:
            if key not in known:
                self.problems.add(
                    ("defaults", key),
                    f"unknown option {key!r}: no registered job has it{suggest(key, known)}",
                )
        return value

    def _resources(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.add(path, "slurm: a mapping of resource -> value")
            return {}
        out = {}
        for key, item in value.items():
            kind = RESOURCES.get(key)
            if kind is None:
                self.problems.add(
                    (*path, key),
                    f"unknown Slurm resource {key!r}{suggest(key, RESOURCES)}; "
                    f"resources: {', '.join(RESOURCES)}",
                )
            elif isinstance(item, bool) or not isinstance(item, kind):
                self.problems.add((*path, key), f"{key} {item!r} has the wrong type")
            elif kind is list and not all(isinstance(line, str) for line in item):
                self.problems.add((*path, key), f"{key}: a list of shell lines")
            elif kind is not str and kind is not list and item <= 0:
                self.problems.add((*path, key), f"{key} must be positive")
            else:
                out[key] = item
        return out

    def _split(self, value: Any, path: KeyPath) -> dict[str, Any] | None:
        """A checked ``split_extraction`` entry (``{"min_images", "parts", "slurm"}``), or
        None for ``false`` or one with problems (added)."""
        if value is None or value is False:
            return None
        usage = (
            "split_extraction: {min_images: N, parts: K} (split the feature extraction of a "
            "dataset of N images or more into K tasks), or false"
        )
        if not isinstance(value, dict):
            self.problems.add(path, usage)
            return None
        found = self.problems.count
        self._unknown_keys(value, path, SPLIT_KEYS)
        for key, least, meaning in (
            ("min_images", 1, "the smallest dataset, in images, whose extraction is split"),
            ("parts", 2, "how many tasks share one extraction"),
        ):
            if key not in value:
                self.problems.add(path, f"split_extraction needs {key} ({meaning})")
                continue
            item = value[key]
            if isinstance(item, bool) or not isinstance(item, int) or item < least:
                one = type(item) is int and item == 1
                hint = " (1 part is no split: write `split_extraction: false`)" if one else ""
                self.problems.add(
                    (*path, key), f"{key} takes a whole number >= {least}, got {item!r}{hint}"
                )
        resources = self._resources(value.get("slurm", {}), (*path, "slurm"))
        if self.problems.count > found:
            return None
        return {"min_images": value["min_images"], "parts": value["parts"], "slurm": resources}

    def _synthetic(self, value: Any) -> Synthetic | None:
        if value is None or value is False:
            return None
        if value is True:
            return Synthetic()
        if not isinstance(value, dict):
            self.problems.add(("synthetic",), "synthetic: true, or a mapping per_class/size/seed")
            return None
        self._unknown_keys(value, ("synthetic",), tuple(SYNTHETIC_KEYS))
        for key in SYNTHETIC_KEYS:
            item = value.get(key, 1)
            least = 0 if key == "seed" else 1
            if isinstance(item, bool) or not isinstance(item, int) or item < least:
                self.problems.add(("synthetic", key), f"{key} takes a whole number >= {least}")
                return None
        return Synthetic(**{k: v for k, v in value.items() if k in SYNTHETIC_KEYS})

    def _check_synthetic(self, cells: list[Cell]) -> None:
        from medtransfer.data.synth.writers import WRITERS

        for cell in cells:
            dataset = cell.raw.get("dataset")
            if isinstance(dataset, str) and dataset not in WRITERS:
                self.problems.add(
                    ("synthetic",),
                    f"synthetic: no synthetic layout for {dataset!r} (cell at {cell.where}); "
                    f"available: {', '.join(WRITERS)}",
                )

    # -- one block -----------------------------------------------------------------------
    def _block(
        self,
        block: dict[str, Any],
        path: KeyPath,
        preset: str,
        defaults: dict[str, Any],
        resources: dict[str, Any],
        split: dict[str, Any] | None,
    ) -> list[Cell]:
        found = self.problems.count
        self._unknown_keys(block, path, BLOCK_KEYS)
        protocol = block.get("protocol")
        job = self.jobs.get(protocol) if isinstance(protocol, str) else None
        if job is None:
            registered = ", ".join(self.jobs)
            self.problems.add(
                (*path, "protocol"),
                f"protocol {protocol!r} is not a registered job of this medtransfer"
                f"{suggest(str(protocol), self.jobs)} (registered: {registered}); use a "
                "version that has it, or leave the block out",
            )
        fields = option_fields(job) if job else {}
        axes: dict[str, list[Any]] = {}
        for key, field_name, check in (
            ("models", "model", canonical_model),
            ("datasets", "dataset", lambda v: canonical_dataset(v, self.base)),
        ):
            if key in block:
                axes[field_name] = self._names(block[key], (*path, key), check)
                if job and field_name not in fields:
                    self.problems.add((*path, key), f"{job.name} takes no {field_name}")
        seed_field = "seed" if "seed" in fields else "seeds"
        if "seeds" in block:
            seeds = self._values(block["seeds"], (*path, "seeds"))
            for i, seed in enumerate(seeds):
                if isinstance(seed, bool) or not isinstance(seed, int):
                    self.problems.add((*path, "seeds", i), f"a seed is an integer, got {seed!r}")
            if job and seed_field not in fields:
                self.problems.add((*path, "seeds"), f"{job.name} takes no seed")
            axes[seed_field] = seeds
        options = self._options(block.get("options", {}), (*path, "options"), fields)
        vary = block.get("vary", {})
        if not isinstance(vary, dict):
            self.problems.add((*path, "vary"), "vary: a mapping of option -> list of values")
            vary = {}
        for name, values in vary.items():
            values = self._values(values, (*path, "vary", name))
            if job:
                self._option(fields, name, (*path, "vary", name), *values)
            axes[name] = values
        preset_path: KeyPath = (*path, "preset") if "preset" in block else ("preset",)
        block_preset = self._preset(block.get("preset", preset), preset_path, job)
        block_resources = {**resources, **self._resources(block.get("slurm", {}), (*path, "slurm"))}
        if "split_extraction" in block:
            split = self._split(block["split_extraction"], (*path, "split_extraction"))
            self._reads_features(job, block["split_extraction"], (*path, "split_extraction"))
        stage = block.get("stage", 0)
        if isinstance(stage, bool) or not isinstance(stage, int) or stage < 0:
            self.problems.add((*path, "stage"), "stage: a whole number (0 runs first)")
            stage = 0
        rules = (
            self._when(block["when"], (*path, "when"), fields, axes, job) if "when" in block else []
        )
        excluded = [
            self._match(item, (*path, "exclude", i), axes)
            for i, item in enumerate(self._values(block.get("exclude", ()), (*path, "exclude")))
        ]
        if job is None:
            return []
        job_defaults = {k: v for k, v in defaults.items() if k in fields}
        for name, value in job_defaults.items():
            self._option(fields, name, ("defaults", name), value)
        missing = [f.name for f in fields.values() if f.required and f.name not in axes]
        missing = [name for name in missing if name not in options and name not in job_defaults]
        if missing:
            hint = {"model": "models: [...]", "dataset": "datasets: [...]"}
            fixes = ", ".join(hint.get(name, f"options: {{{name}: ...}}") for name in missing)
            self.problems.add(path, f"{job.name} needs {', '.join(missing)}: add {fixes}")
            return []
        if self.problems.count > found:
            return []  # the cells would only repeat the block's problems
        place = self.doc.where(path)
        cells = []
        refused: dict[str, list[str]] = {}
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo, strict=True))
            if any(rule(point) for rule in excluded):
                continue
            raw = {**job_defaults, **options}
            raw.update({k: [v] if k == "seeds" else v for k, v in point.items()})
            cell_resources = dict(block_resources)
            cell_split = split
            for matches, when_options, when_resources, when_split in rules:
                if matches(point):
                    raw.update(when_options)
                    cell_resources.update(when_resources)
                    cell_split = cell_split if when_split is _UNSET else when_split
            if job.name not in FEATURE_PROTOCOLS:
                cell_split = None  # a top-level setting: only jobs over stored features
            cell = self._cell(
                job, fields, raw, block_preset, stage, cell_resources, place, cell_split
            )
            if isinstance(cell, Cell):
                cells.append(cell)
            else:
                refused.setdefault(cell, []).append(_label(job.name, raw, fields, block_preset))
        for reason, labels in refused.items():
            more = f" and {len(labels) - 1} more cell(s)" if len(labels) > 1 else ""
            self.problems.add(path, f"{labels[0]}{more}: {reason}")
        return cells

    def _names(self, value: Any, path: KeyPath, check: Callable[[Any], str]) -> list[str]:
        """The checked names of an axis; a list inside the list (an alias of a named list)
        is spliced in."""
        names = []
        for item, where in self._flat(value, path):
            try:
                names.append(check(item))
            except ValueError as exc:
                self.problems.add(where, str(exc))
        return names

    def _flat(self, value: Any, path: KeyPath) -> list[tuple[Any, KeyPath]]:
        if not isinstance(value, list):
            return [(v, path) for v in self._values(value, path)]
        out = []
        for i, item in enumerate(self._values(value, path)):
            if isinstance(item, list):
                out.extend((v, (*path, i, j)) for j, v in enumerate(item))
            else:
                out.append((item, (*path, i)))
        return out

    def _values(self, value: Any, path: KeyPath) -> list[Any]:
        if isinstance(value, tuple):  # a key left out
            return list(value)
        if isinstance(value, list):
            if not value:
                self.problems.add(path, "an empty list gives no cells")
            return value
        if isinstance(value, dict):
            self.problems.add(path, "a value or a list of values, not a mapping")
            return []
        return [value]

    def _option(
        self, fields: dict[str, OptionField], name: str, path: KeyPath, *values: Any
    ) -> bool:
        """Check that ``name`` is an option a grid may set and that each of ``values`` fits
        it; False (with the problems added) otherwise."""
        option = fields.get(name)
        if name in ("model", "dataset"):
            self.problems.add(path, f"set {name} through `{name}s:`, not as an option")
            return False
        if option is None or not option.settable:
            known = [n for n, f in fields.items() if f.settable]
            self.problems.add(path, f"unknown option {name!r}{suggest(name, known)}")
            return False
        ok = True
        for index, value in enumerate(values):
            try:
                coerce(option, value, self.base)
            except ValueError as exc:
                self.problems.add((*path, index) if len(values) > 1 else path, str(exc))
                ok = False
        return ok

    def _options(self, value: Any, path: KeyPath, fields: dict[str, OptionField]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.add(path, "options: a mapping of option -> value")
            return {}
        if not fields:  # the protocol is unknown: reported already
            return {}
        return {
            name: item
            for name, item in value.items()
            if self._option(fields, name, (*path, name), item)
        }

    def _reads_features(self, job: Job | None, value: Any, path: KeyPath) -> None:
        """A block or ``when`` entry of a job that reads no stored features may not ask
        for a split (false is fine)."""
        if job is not None and value not in (None, False) and job.name not in FEATURE_PROTOCOLS:
            self.problems.add(
                path,
                f"{job.name} reads no stored features (only {', '.join(FEATURE_PROTOCOLS)} "
                "do): split_extraction has nothing to split here; leave it out",
            )

    def _when(
        self,
        value: Any,
        path: KeyPath,
        fields: dict[str, OptionField],
        axes: dict[str, list[Any]],
        job: Job | None,
    ) -> list[tuple[Callable[[dict[str, Any]], bool], dict[str, Any], dict[str, Any], Any]]:
        rules = []
        for i, rule in enumerate(self._values(value, path)):
            where: KeyPath = (*path, i)
            if not isinstance(rule, dict) or "match" not in rule:
                self.problems.add(where, "each `when` entry has `match:` and options/slurm")
                continue
            self._unknown_keys(rule, where, WHEN_KEYS)
            matches = self._match(rule["match"], (*where, "match"), axes)
            options = self._options(rule.get("options", {}), (*where, "options"), fields)
            resources = self._resources(rule.get("slurm", {}), (*where, "slurm"))
            split = _UNSET
            if "split_extraction" in rule:
                split = self._split(rule["split_extraction"], (*where, "split_extraction"))
                self._reads_features(job, rule["split_extraction"], (*where, "split_extraction"))
            rules.append((matches, options, resources, split))
        return rules

    def _match(
        self, value: Any, path: KeyPath, axes: dict[str, list[Any]]
    ) -> Callable[[dict[str, Any]], bool]:
        """A predicate over a cell's axis values: every key's value (or one of a list)."""
        if not isinstance(value, dict) or not value:
            self.problems.add(path, "a match is a mapping of axis -> value or list of values")
            return lambda point: False
        wanted: dict[str, list[Any]] = {}
        checks = {
            "model": canonical_model,
            "dataset": lambda v: canonical_dataset(v, self.base),
        }
        for key, item in value.items():
            name = {"models": "model", "datasets": "dataset", "seeds": "seed"}.get(key, key)
            if name == "seed" and "seed" not in axes:
                name = "seeds"
            if name not in axes:
                self.problems.add(
                    (*path, key),
                    f"{key!r} is not an axis of this block; axes: {', '.join(axes) or 'none'}",
                )
                continue
            check = checks.get(name, lambda v: v)
            wanted[name] = self._names(item, (*path, key), check)

        def matches(point: dict[str, Any]) -> bool:
            return all(point.get(k) in values for k, values in wanted.items())

        return matches

    def _cell(
        self,
        job: Job,
        fields: dict[str, OptionField],
        raw: dict[str, Any],
        preset: str,
        stage: int,
        resources: dict[str, Any],
        place: str,
        split: dict[str, Any] | None,
    ) -> Cell | str:
        """The cell of ``raw`` under ``preset``, or why the job refuses it."""
        try:
            given = {name: coerce(fields[name], value, self.base) for name, value in raw.items()}
            options = job.resolve(given, preset)
        except (ValueError, TypeError, MedTransferError) as exc:
            return str(exc)
        # as written (the job's parsers turn them into values again wherever the cell runs),
        # with names canonical and paths absolute
        plain = {
            name: str(given[name]) if isinstance(given[name], Path) else value
            for name, value in raw.items()
        }
        return Cell(
            protocol=job.name,
            raw=plain,
            preset=preset,
            stage=stage,
            resources=resources,
            where=place,
            key=cell_key(job, options),
            reuse=reuse_key(options),
            label=_label(job.name, plain, fields, preset),
            split=split,
        )


def _label(protocol: str, raw: dict[str, Any], fields: dict[str, OptionField], preset: str) -> str:
    """``few-shot random_r18 shenzhencxr n_way=2 seed=0 [original]``: the settings that can
    change the result (output-only ones left out)."""
    parts = [protocol, *(str(raw[k]) for k in ("model", "dataset") if k in raw)]
    for name in sorted(raw):
        option = fields.get(name)
        if name in ("model", "dataset") or (option and option.field.metadata.get("output_only")):
            continue
        value = raw[name]
        shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
        parts.append(f"{name}={shown}")
    if preset != "none":
        parts.append(f"[{preset}]")
    return " ".join(parts)
