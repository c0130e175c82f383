"""Run records: one self-describing JSON file per run, plus a log for people.

Records live at ``<results>/<protocol>/<label>/<dataset>/<run_id>.json`` with the log at
``<run_id>.log`` beside it, and a job's output files (images, arrays) in the folder
``<run_id>/`` (:func:`outputs_folder`). The label (:func:`run_label`) is the model's catalog
name for its own weights and ``MODEL@<file stem>`` (or the user's ``--label``) for a weights
file, so runs of one architecture with different weights never share a folder. ``run_id``
is the UTC start time plus the first 8 hex digits of the hash of (protocol, model, label,
dataset, params, seed), so repeated runs never overwrite each other and one configuration's
runs sort together in time; a second run that starts in the same second gets the next free
``-2``, ``-3``, ... suffix, claimed atomically (two processes can never pick the same
name). The schema is documented in ``docs/records.md``; bump :data:`SCHEMA_VERSION` on any
incompatible change.

Code that runs jobs on behalf of something else (a sweep) can add keys to every record
written inside a :func:`record_context` block, without the jobs knowing.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import io
import os
import platform
import subprocess
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medtransfer
from medtransfer.errors import ConfigError
from medtransfer.fsutil import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_json,
)
from medtransfer.results.sidecar import sidecar_path

SCHEMA_VERSION = 1

_CONTEXT: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "record_context", default=()
)


@contextlib.contextmanager
def record_context(**keys: Any) -> Iterator[None]:
    """Every record built inside the block carries ``keys`` as extra top-level keys (a sweep
    tags its records with the cell they belong to); they are not part of ``config_hash``."""
    token = _CONTEXT.set((*_CONTEXT.get(), *keys.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name).strip("_") or "x"


def run_label(
    model: str, label: str | None, weights_file: Path | None, reserved: Collection[str]
) -> str:
    """The name a run is filed and tabled under.

    ``model``: the catalog name; ``label``: the user's ``--label`` (None: the default);
    ``weights_file``: a ``--weights`` file (None: the catalog's own weights);
    ``reserved``: every catalog model name and alias. Without a weights file the default is
    ``model``; with one, ``MODEL@<file stem>``. A label that names a catalog model is only
    that model's own (a random baseline and a checkpoint of its architecture must never
    share a folder).

    Raises:
        ConfigError: an empty label, or a label naming a catalog model other than the run's
            own weights.
    """
    if label is None:
        return model if weights_file is None else f"{model}@{Path(weights_file).stem}"
    label = label.strip()
    if not label:
        raise ConfigError("--label must not be empty.")
    if label.lower() in {name.lower() for name in reserved} and (
        weights_file is not None or label != model
    ):
        whose = f"your weights file {weights_file}" if weights_file else f"model {model}"
        raise ConfigError(
            f"--label {label} names a catalog model; runs of {whose} would be filed beside "
            f"that model's own. Choose another label (e.g. {model}@{label})."
        )
    return label


def record_folder(results_root: Path, record: Record) -> Path:
    """``<results>/<protocol>/<label>/<dataset>``, each part a safe folder name."""
    return results_root / _safe(record.protocol) / _safe(record.label) / _safe(record.dataset)


def git_commit() -> str | None:
    """The commit of the medtransfer checkout this code runs from, when it is one."""
    package_dir = Path(medtransfer.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def environment_info(device: str) -> dict[str, Any]:
    """Versions and device a record was produced with."""
    info: dict[str, Any] = {
        "medtransfer": medtransfer.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


@dataclass
class Record:
    """Everything a run produced and depended on; see ``docs/records.md``."""

    protocol: str
    model: str
    dataset: str
    params: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    weights_sha256: str
    manifest_hash: str
    timings: dict[str, float]
    environment: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    weights_file: dict[str, str] | None = None
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def __post_init__(self) -> None:
        self.label = self.label or self.model

    def config_hash(self) -> str:
        """Hash of what defines the run (not its outputs, timings or environment)."""
        config = {
            "protocol": self.protocol,
            "model": self.model,
            "dataset": self.dataset,
            "params": self.params,
            "seed": self.seed,
        }
        if self.label != self.model:
            config["label"] = self.label
        return sha256_json(config)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "protocol": self.protocol,
            "model": self.model,
            "label": self.label,
            "dataset": self.dataset,
            "params": self.params,
            "seed": self.seed,
            "metrics": self.metrics,
            "weights_sha256": self.weights_sha256,
            "weights_file": self.weights_file,
            "manifest_hash": self.manifest_hash,
            "config_hash": self.config_hash(),
            "timings": self.timings,
            "environment": self.environment,
            **dict(_CONTEXT.get()),
            **self.extra,
        }


def outputs_folder(record_path: Path) -> Path:
    """The folder of a record's output files: its path without ``.json``."""
    return Path(record_path).with_suffix("")


def write_record(
    results_root: Path,
    record: Record,
    log_lines: list[str],
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    outputs: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``record`` as JSON and ``log_lines`` as its log, atomically, in
    :func:`record_folder`; returns the JSON path.

    ``outputs(folder)``, when given, writes the run's output files into ``folder``, which
    becomes :func:`outputs_folder` of the record, complete, before the record is written
    (so a record never points at missing outputs).

    ``arrays`` (name -> array), when given and not empty, go to the compressed sidecar
    :func:`sidecar_path`, written before the JSON (a record that exists has its sidecar
    complete); ``record.extra["arrays"]`` (so the record's ``arrays`` key) is set to the
    file's name and each array's shape and dtype.
    """
    folder = record_folder(results_root, record)
    stamp = record.created.replace("-", "").replace(":", "")
    run_id = f"{stamp}-{record.config_hash()[:8]}"
    path = _claim(folder, run_id)
    try:
        if outputs is not None:
            with atomic_directory(outputs_folder(path)) as staging:
                outputs(staging)
        if arrays:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
            atomic_write_bytes(sidecar_path(path), buffer.getvalue())
            record.extra["arrays"] = {
                "file": sidecar_path(path).name,
                "contents": {
                    k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)}
                    for k, v in arrays.items()
                },
            }
    except BaseException:
        path.with_suffix(".log").unlink(missing_ok=True)  # give the claimed name back
        raise
    atomic_write_text(path.with_suffix(".log"), "\n".join(log_lines) + "\n")
    atomic_write_json(path, record.to_json())
    return path


def _claim(folder: Path, run_id: str) -> Path:
    """The first free ``<run_id>[-N].json`` in ``folder`` (neither the record nor its
    outputs folder exists), claimed for this process by creating its ``.log`` exclusively
    (``O_EXCL``: of several processes asking at once, exactly one gets each name); the log
    is then overwritten atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1
    while True:
        path = folder / (f"{run_id}.json" if counter == 1 else f"{run_id}-{counter}.json")
        counter += 1
        if path.exists() or outputs_folder(path).exists():
            continue
        try:
            os.close(os.open(path.with_suffix(".log"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return path
