"""Option fields and their command-line flags.

A job's options are frozen dataclasses whose fields are declared with :func:`option`: the
default, help, flags, choices and, for values that are not a plain ``int``/``float``/
``str``/``Path``/``bool``, a parser. The command line builds a job's flags from these
fields (:func:`add_flags`) and the options back from the parsed arguments
(:func:`from_args`), so a default is stated in one place.

Flag rules: a field ``n_way`` is ``--n-way`` unless ``flags`` says otherwise; a ``bool``
field defaulting to False is a switch that sets it (``--search``), one defaulting to True
a switch that clears it (``--no-da`` clears ``augment``); a field without a default is a
required flag; a field declared with ``many=True`` may be given several times, its values
joined by commas (``-m a -m b`` is ``a,b``; the caller splits them); a field declared with
``cli=False`` has no flag (it is set by code, e.g. the settings a preset expanded to); a
class attribute ``CLI_GROUP`` puts the class's flags under that heading.

A field declared with ``output_only=True`` changes where, how fast or how visibly a result
is computed (device, workers, batch size of frozen passes, progress bars), never the result
itself: resume keys (:mod:`medtransfer.sweep.hashing`) leave it out, so setting it never
re-runs finished work. A job whose result does depend on such a field names it in
:attr:`medtransfer.jobs.base.Job.result_options` (fine-tuning: the training batch).

A flag the user did not give is absent from the parsed arguments (its argparse default is
``SUPPRESS``), so :func:`given_values` tells the values the user chose from the defaults,
and a preset (:meth:`medtransfer.jobs.base.Job.resolve`) can fill in only the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from medtransfer.errors import ConfigError

T = TypeVar("T")

#: Turns a flag's text into the field's value: ``parse(text, flag)``; raises ConfigError.
Parser = Callable[[str, str], Any]

_SCALARS = (bool, int, float, str, Path)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flags: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    parse: Parser | None = None,
    cli: bool = True,
    many: bool = False,
    output_only: bool = False,
) -> Any:
    """A dataclass field with its command-line form (module docstring)."""
    metadata = {
        "help": help,
        "flags": flags,
        "choices": choices,
        "parse": parse,
        "cli": cli,
        "many": many,
        "output_only": output_only,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def str_list(text: str, flag: str) -> tuple[str, ...]:
    """``"a, b/c.png,"`` -> ``("a", "b/c.png")`` (items stripped, empty ones dropped); an
    error naming ``flag`` when nothing is left."""
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values:
        raise ConfigError(f"{flag} needs at least one value.")
    return values


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"10,20"`` -> ``(10, 20)``; a clear error naming the flag otherwise."""
    try:
        return tuple(int(part) for part in str_list(text, flag))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}.") from None


def or_original(kind: type[int] | type[float]) -> Parser:
    """A parser of ``kind`` numbers that also takes the word ``original`` (a value the job
    resolves from what the original study did, docs/original-study.md#presets)."""

    def parse(text: str, flag: str) -> int | float | str:
        if text.strip().lower() == "original":
            return "original"
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(
                f"{flag} takes {'an integer' if kind is int else 'a number'} or 'original', "
                f"got {text!r}."
            ) from None

    return parse


def image_size_option(default: int = 224) -> Any:
    """``-i/--image-size``: the crop size every image-reading job takes."""
    return option(default, "crop size", flags=("-i", "--image-size"))


def bootstrap_option() -> Any:
    """``--bootstrap``: resamples of the test metric's interval (0: no interval)."""
    return option(1000, "bootstrap resamples")


class _JoinAction(argparse.Action):
    """Each use of the flag appends its value to the earlier ones, joined by commas."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        before = getattr(namespace, self.dest, None)
        joined = str(values) if before in (None, argparse.SUPPRESS) else f"{before},{values}"
        setattr(namespace, self.dest, joined)


def _flags(field: dataclasses.Field[Any]) -> tuple[str, ...]:
    return field.metadata.get("flags") or ("--" + field.name.replace("_", "-"),)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def with_default(help_text: str, default: Any) -> str:
    """``help_text`` followed by ``(default: <default>)``, unless it already states its
    default that way; a None default reads "not set" (the help says what that means)."""
    if "(default:" in help_text:
        return help_text
    return f"{help_text} (default: {'not set' if default is None else _shown(default)})"


def _metavar(field: dataclasses.Field[Any], value_type: type | None) -> str:
    """The flag's name in upper case (``--n-way N_WAY``); for a one-letter name that a short
    flag repeats (``-c``/``--C``), the value's type instead (``-c FLOAT, --C FLOAT``)."""
    flags = _flags(field)
    name = flags[-1].lstrip("-")
    short = any(len(flag) == 2 and flag[1].lower() == name.lower() for flag in flags[:-1])
    if len(name) == 1 and short:
        names: dict[Any, str] = {int: "INT", float: "FLOAT", Path: "PATH"}
        return names.get(value_type, "VALUE")
    return name.replace("-", "_").upper()


def _value_type(hint: Any) -> type:
    """``int`` for ``int`` or ``int | None``; TypeError for anything else without a parser."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(args) == 1 and args[0] in _SCALARS:
        return args[0]
    raise TypeError(f"an option of type {hint} needs parse=")


def add_flags(
    parser: argparse.ArgumentParser, options: type, *, exclude: tuple[str, ...] = ()
) -> None:
    """Add a flag per field of the dataclass ``options`` to ``parser`` (in an argument
    group titled ``options.CLI_GROUP`` when the class names one), except the fields named
    in ``exclude`` (they keep their defaults)."""
    title = getattr(options, "CLI_GROUP", None)
    target: Any = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(options)
    for field in cli_fields(options):
        if field.name in exclude:
            continue
        meta = field.metadata
        kwargs: dict[str, Any] = {"dest": field.name}
        help_text = meta.get("help", "")
        if field.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS
            if not isinstance(field.default, bool):
                help_text = with_default(help_text, field.default)
        if meta.get("parse") is None:
            value_type = _value_type(hints[field.name])
            if value_type is bool:
                if field.default and not meta.get("flags"):
                    raise TypeError(f"{field.name} defaults to True: name the flag that clears it")
                kwargs["action"] = "store_false" if field.default else "store_true"
            else:
                kwargs["type"] = value_type
        if meta.get("many"):
            kwargs["action"] = _JoinAction
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if kwargs.get("action") in (None, _JoinAction) and "choices" not in kwargs:
            kwargs["metavar"] = _metavar(field, kwargs.get("type"))
        target.add_argument(*_flags(field), help=help_text.replace("%", "%%"), **kwargs)


def cli_fields(options: type) -> list[dataclasses.Field[Any]]:
    """The fields of the dataclass ``options`` that have a flag (not ``cli=False``)."""
    return [f for f in dataclasses.fields(options) if f.metadata.get("cli", True)]


def given_values(options: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``options``' fields that the user gave on the command line (flags left
    out are absent), each through its field's parser (errors name the flag)."""
    values = {}
    for field in cli_fields(options):
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        parse = field.metadata.get("parse")
        if parse is not None and isinstance(value, str):
            value = parse(value, _flags(field)[-1])
        values[field.name] = value
    return values


def from_args(options: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``options`` built from the arguments :func:`add_flags` declared: the
    values given on the command line, the fields' defaults for the rest (no preset)."""
    return options(**given_values(options, args))
