"""Pieces every PyTorch-pickle converter shares.

* :func:`safe_torch_load` reads a ``torch.save`` file (zip or legacy container) with
  ``torch.load(weights_only=True)``: only tensors, containers and primitives, plus the few
  globals a converter names, each resolved to an inert stand-in. Anything else is refused
  before it can run, with a :class:`ModelError` naming the file and the global.
* :func:`unwrap` takes the weights out of a checkpoint dict (``'state_dict'``, ``'model'``).
* :func:`keep_prefix` keeps the keys that START WITH a prefix and strips it (the original
  used ``prefix in key``, which also kept momentum encoders and queues;
  docs/original-study.md#defect-d9).
* :func:`drop_prefixes` drops heads (projection MLPs, prototypes, classifiers).
* :func:`query_encoder` takes a MoCo query encoder out of a checkpoint.
* :func:`check_arch` / :func:`check_declared_arch` reject a file for the wrong architecture.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from medtransfer.errors import ModelError
from medtransfer.models.archs import converted_archs, get_arch

_SHOW = 5  # keys quoted in an error message
_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)")


def check_arch(arch: str, converter: str) -> None:
    """Raise a ModelError unless ``arch`` is one this project's converters produce."""
    archs = converted_archs()
    if arch not in archs:
        raise ModelError(
            f"The {converter} converter makes {', '.join(archs)} weights, not {arch!r}."
        )


def check_declared_arch(declared: object, arch: str, path: Path) -> None:
    """Raise a ModelError if the file states (``declared``) another architecture than ``arch``.

    ``declared`` is the checkpoint's own record (e.g. MoCo's ``'arch'`` entry); anything
    that is not a string (absent, None) is not checked.
    """
    if isinstance(declared, str) and declared != arch:
        raise ModelError(
            f"The checkpoint {path} was trained with arch {declared!r}, but this model is a "
            f"{arch}. Use the file published for this model."
        )


def safe_torch_load(path: Path, *, allowed_globals: Mapping[str, object] | None = None) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with a closed allow-list.

    Args:
        path: a file written by ``torch.save`` (zip or legacy container).
        allowed_globals: full pickle names (``'module.Qualname'``) the file may refer to,
            each mapped to the inert object that stands in for it. Nothing is imported.

    Raises:
        ModelError: the file is missing or unreadable, or refers to any other global (the
            message names the file and the refused global; nothing of the payload runs).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"The checkpoint {path} does not exist.")
    allowed = dict(allowed_globals or {})
    stand_ins = [(obj, name) for name, obj in allowed.items()]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, str(err), allowed) from err
    except Exception as err:  # zip/EOF errors from a truncated or foreign file
        raise ModelError(
            f"The checkpoint {path} cannot be read as a PyTorch file ({_first_line(err)}). It "
            "may be truncated or corrupt; delete it and download it again."
        ) from err


def _refusal(path: Path, message: str, allowed: Mapping[str, object]) -> ModelError:
    match = _GLOBAL_IN_ERROR.search(message)
    permitted = ", ".join(allowed) if allowed else "none"
    if match:
        return ModelError(
            f"The checkpoint {path} refers to the Python global {match[1]}, which is refused "
            f"(it was not run): only tensors and plain containers are read (extra globals "
            f"allowed for this format: {permitted}). The published file never needs it; "
            "delete this one and download the original again."
        )
    return ModelError(
        f"The checkpoint {path} holds Python objects that are refused for safety "
        f"({_unpickler_reason(message)}). Delete it and download the original again."
    )


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights-only error that says what was refused (not its advice)."""
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(advice)]
    return (reasons or lines or ["unknown reason"])[0]


def _first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def describe_keys(obj: object) -> str:
    """A short description of what a checkpoint holds: its first keys, or its type."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj]
        if not keys:
            return "an empty dict"
        shown = ", ".join(repr(k) for k in keys[:_SHOW])
        more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
        return f"keys {shown}{more}"
    return f"a {type(obj).__name__}"


def unwrap(obj: object, key: str, path: Path, fmt: str) -> Mapping[str, object]:
    """``obj[key]``: the weights a checkpoint dict keeps under ``key``.

    ``fmt`` names the expected format in the error (e.g. ``'MoCo checkpoint'``).
    """
    inner = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(inner, Mapping):
        raise ModelError(
            f"The file {path} is not a {fmt}: expected a dict with the weights under {key!r}, "
            f"found {describe_keys(obj)}. Check that this is the file published for this model."
        )
    return inner


def keep_prefix(
    state: Mapping[str, object], prefix: str, path: Path, fmt: str
) -> dict[str, Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix stripped.

    Raises:
        ModelError: no key starts with ``prefix`` (the message quotes the first keys), or a
            kept entry is not a tensor.
    """
    kept = {
        key[len(prefix) :]: value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith(prefix)
    }
    if not kept:
        raise ModelError(
            f"The {fmt} {path} has no weights whose names start with {prefix!r}; found "
            f"{describe_keys(state)}. Check that this is the file published for this model."
        )
    bad = [f"{prefix}{k}" for k, v in kept.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelError(
            f"The {fmt} {path} has non-tensor entries under {prefix!r}: "
            f"{', '.join(bad[:_SHOW])}. The file is damaged or not the published one."
        )
    return cast(dict[str, Tensor], kept)


def drop_prefixes(state: Mapping[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """``state`` without the entries whose key starts with any of ``prefixes``."""
    dropped = tuple(prefixes)
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def query_encoder(
    checkpoint: object,
    arch: str,
    path: Path,
    fmt: str,
    prefix: str,
    declared_arch: Callable[[Mapping[str, object]], object],
) -> dict[str, Tensor]:
    """The MoCo query encoder kept in ``checkpoint['state_dict']`` under ``prefix``.

    Input: ``{'state_dict': {'<prefix><torchvision key>': Tensor, ...}, ...}``.
    Output: ``{<torchvision key>: Tensor}`` without the encoder's classifier (MoCo's
    projection head replaces exactly it) and without anything outside ``prefix``.

    Raises:
        ModelError: no ``'state_dict'``, no key under ``prefix``, or a checkpoint whose
            ``declared_arch(checkpoint)`` names another architecture than ``arch``.
    """
    state = unwrap(checkpoint, "state_dict", path, fmt)
    check_declared_arch(declared_arch(cast(Mapping[str, object], checkpoint)), arch, path)
    encoder = keep_prefix(state, prefix, path, fmt)
    return drop_prefixes(encoder, [get_arch(arch).classifier_prefix])
