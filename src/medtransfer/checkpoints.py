"""Checkpoints of long runs: tensors and plain values written atomically, and read back
only by the run they belong to (same format version, same fingerprint of settings and
data). Used by fine-tuning and by feature inversion."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medtransfer.errors import ProtocolError
from medtransfer.fsutil import atomic_write_bytes


def save_tensors(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` of ``payload`` (tensors, state dicts, plain values) written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def write_checkpoint(
    path: Path, payload: dict[str, Any], *, version: int, fingerprint: str
) -> None:
    """Write ``payload`` with its format ``version`` and the run's ``fingerprint``."""
    save_tensors(path, {"version": version, "fingerprint": fingerprint, **payload})


def read_checkpoint(path: Path, *, version: int, fingerprint: str, what: str) -> dict[str, Any]:
    """The payload at ``path`` (on the CPU, tensors only: no pickled code).

    Raises:
        ProtocolError: the file cannot be read, or it belongs to another run (another
            format version or fingerprint); ``what`` names the kind of run.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ProtocolError(
            f"The {what} checkpoint {path} cannot be read ({err}); delete it to start over."
        ) from err
    if payload.get("version") != version or payload.get("fingerprint") != fingerprint:
        raise ProtocolError(
            f"The {what} checkpoint {path} belongs to a run with other settings or data; "
            "rerun with the same settings, or delete its folder to start over."
        )
    return payload
