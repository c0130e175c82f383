"""Option values written in a grid file, checked against a job's option fields.

A job's options are the fields of the dataclasses its ``run`` takes (declared with
:func:`medtransfer.jobs.flags.option`). A grid sets a field by its name (``n_way``, not
``--n-way``); the value is checked against the field's type and choices, and a field with a
parser (comma-separated lists such as ``ks``) takes a YAML list or the text the flag takes.
Model and dataset names are checked against the catalogs and written in their canonical
form; relative paths are taken from the grid file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import MedTransferError
from medtransfer.jobs.base import Job

_USER_DATA = ("imagefolder:", "csv:")


@dataclass(frozen=True)
class OptionField:
    """One option field of a job: the dataclass field and its type hint."""

    field: dataclasses.Field[Any]
    hint: Any

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def settable(self) -> bool:
        """Whether a grid may set it (fields without a flag are set by code)."""
        return bool(self.field.metadata.get("cli", True))

    @property
    def required(self) -> bool:
        return (
            self.field.default is dataclasses.MISSING
            and self.field.default_factory is dataclasses.MISSING
        )


def option_fields(job: Job) -> dict[str, OptionField]:
    """Every option field of ``job``, by name."""
    fields = {}
    for cls in job.options:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields[f.name] = OptionField(f, hints[f.name])
    return fields


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(option: OptionField, value: Any, base: Path) -> Any:
    """``value`` as written in the grid, as the option's value.

    Raises:
        ValueError: the value does not fit the field (the message says what it takes).
    """
    meta = option.field.metadata
    args = [a for a in typing.get_args(option.hint) if a is not type(None)]
    optional = type(None) in typing.get_args(option.hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{option.name} cannot be null")
    parse = meta.get("parse")
    if parse is not None:
        text = _as_text(option.name, value)
        try:
            parsed = parse(text, option.name)
        except MedTransferError as exc:
            raise ValueError(str(exc)) from None
        return _choice(option, parsed)
    kind = args[0] if len(args) == 1 else option.hint
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{option.name} takes true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{option.name} takes an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{option.name} takes a number, got {value!r}")
        value = float(value)
    elif kind is Path:
        if not isinstance(value, str):
            raise ValueError(f"{option.name} takes a path, got {value!r}")
        value = (base / Path(value).expanduser()).resolve()
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{option.name} takes text, got {value!r}")
    else:
        raise ValueError(f"{option.name} cannot be set in a grid file")
    return _choice(option, value)


def _as_text(name: str, value: Any) -> str:
    if isinstance(value, list):
        if not value or any(isinstance(v, list | dict | bool) or v is None for v in value):
            raise ValueError(f"{name} takes a list of plain values, got {value!r}")
        return ",".join(str(v) for v in value)
    if isinstance(value, dict | bool):
        raise ValueError(f"{name} takes a value or a list, got {value!r}")
    return str(value)


def _choice(option: OptionField, value: Any) -> Any:
    choices = option.field.metadata.get("choices")
    if choices and value is not None and value not in choices:
        raise ValueError(
            f"{option.name} {value!r} is not one of {', '.join(map(str, choices))}"
            + suggest(str(value), map(str, choices))
        )
    return value


def canonical_model(name: Any) -> str:
    """The catalog name of ``name`` (aliases resolved); ``timm:``/``torchvision:`` names as
    written.

    Raises:
        ValueError: not a catalog model (with the closest name).
    """
    from medtransfer.models.catalog import CATALOG, get_model_spec
    from medtransfer.models.external import is_external

    if not isinstance(name, str):
        raise ValueError(f"a model name is text, got {name!r}")
    if is_external(name):
        return name.strip()
    try:
        return get_model_spec(name).name
    except MedTransferError:
        known = [n for spec in CATALOG for n in (spec.name, *spec.aliases)]
        raise ValueError(f"unknown model {name!r}{suggest(name, known)}") from None


def canonical_dataset(name: Any, base: Path) -> str:
    """The catalog name of ``name``; ``imagefolder:PATH``/``csv:PATH`` with an absolute
    path (relative ones are taken from ``base``).

    Raises:
        ValueError: not a catalog dataset (with the closest name).
    """
    from medtransfer.data.catalog import CATALOG, get_dataset_spec

    if not isinstance(name, str):
        raise ValueError(f"a dataset name is text, got {name!r}")
    for prefix in _USER_DATA:
        if name.startswith(prefix):
            path = Path(name[len(prefix) :]).expanduser()
            return prefix + str((base / path).resolve())
    try:
        return get_dataset_spec(name).name
    except MedTransferError:
        known = [n for spec in CATALOG for n in (spec.name, *spec.aliases)]
        raise ValueError(f"unknown dataset {name!r}{suggest(name, known)}") from None
