"""Every ``--help`` of every sub-command: each option has a one-line meaning and shows its
default; nothing prints a doubled ``%`` or a metavar that repeats its short flag."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from medtransfer.cli import build_parser

_NO_HELP_NEEDED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)


def _parsers(
    parser: argparse.ArgumentParser, name: str = "medtransfer"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command line, parser)`` for the top level and every (nested) sub-command."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


PARSERS = dict(_parsers(build_parser()))


def test_the_walk_reaches_every_command() -> None:
    for command in (
        "medtransfer datasets check",
        "medtransfer datasets synth",
        "medtransfer datasets export",
        "medtransfer models info",
        "medtransfer models convert",
        "medtransfer few-shot",
        "medtransfer linear",
        "medtransfer knn",
        "medtransfer finetune",
        "medtransfer demo",
    ):
        assert command in PARSERS


def _problems(parser: argparse.ArgumentParser) -> list[str]:
    problems = []
    for action in parser._actions:
        if isinstance(action, _NO_HELP_NEEDED):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = (action.help or "").strip()
        if not text or text == argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        if "see above" in text:
            problems.append(f"{name}: help refers elsewhere ({text!r})")
        takes_value = action.option_strings and not isinstance(action, _SWITCHES)
        if takes_value and not action.required and "default" not in text.lower():
            problems.append(f"{name}: help does not show the default ({text!r})")
    return problems


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_has_a_meaning_and_shows_its_default(command: str) -> None:
    parser = PARSERS[command]
    assert _problems(parser) == []
    rendered = parser.format_help()
    assert "%%" not in rendered
    for action in parser._actions:
        shorts = [flag for flag in action.option_strings if len(flag) == 2]
        for short in shorts:
            assert f"{short} {short[1].upper()}," not in rendered, rendered


def test_the_check_catches_what_it_is_for() -> None:
    """The walk above would report a flag without help, one without its default and a
    "see above" text."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", type=int, default=3)
    parser.add_argument("--silent", type=int, default=3, help="a count")
    parser.add_argument("--vague", action="store_true", help="see above")
    parser.add_argument("--fine", type=int, default=3, help="a count (default: 3)")
    assert _problems(parser) == [
        "--bare: no help text",
        "--silent: help does not show the default ('a count')",
        "--vague: help refers elsewhere ('see above')",
    ]


def test_job_flags_show_the_options_defaults() -> None:
    few_shot = PARSERS["medtransfer few-shot"].format_help()
    for text in ("(default: 5)", "(default: 600)", "(default: 15)", "(default: patient)"):
        assert text in few_shot
    linear = PARSERS["medtransfer linear"].format_help()
    assert "-c FLOAT, --C FLOAT" in linear
    assert "(default: not set)" in linear  # -c: the search runs
    finetune = PARSERS["medtransfer finetune"].format_help()
    assert "(default: 0.01)" in finetune and "(default: 1e-08)" in finetune
