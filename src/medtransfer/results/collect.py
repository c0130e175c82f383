"""Reading records back: every run record under a results root, with the files that are not
records (damaged JSON, other tools' JSON) listed rather than fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Keys every run record has, with their JSON types (docs/records.md).
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "protocol": str,
    "model": str,
    "dataset": str,
    "params": dict,
    "metrics": dict,
    "config_hash": str,
    "created": str,
}


@dataclass(frozen=True)
class RecordFile:
    """A run record read from ``path`` (``data``: its JSON object)."""

    path: Path
    data: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return self.data["params"]

    @property
    def label(self) -> str:
        """The run's label (``params.label``, e.g. ``supervised_r18@my``), else its model."""
        label = self.params.get("label")
        return str(label) if label else str(self.data["model"])


@dataclass(frozen=True)
class Skipped:
    """A ``.json`` file under the results root that is not a readable record, and why."""

    path: Path
    reason: str


def check_record(data: object) -> str | None:
    """Why ``data`` (parsed JSON) is not a run record, or None when it is one."""
    if not isinstance(data, dict):
        return f"not a JSON object but {type(data).__name__}"
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        return f"not a medtransfer record (no {', '.join(missing)})"
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(data[k], kind)]
    if wrong:
        return f"malformed record ({', '.join(wrong)} of the wrong type)"
    if isinstance(data["schema_version"], bool) or data["schema_version"] != 1:
        return f"schema_version {data['schema_version']} (this medtransfer reads 1)"
    return None


def read_records(results_root: Path) -> tuple[list[RecordFile], list[Skipped]]:
    """Every run record under ``results_root`` (sorted by path) and the JSON files skipped.

    Hidden files (``.name``: partial writes) are not looked at. A missing root gives no
    records."""
    records: list[RecordFile] = []
    skipped: list[Skipped] = []
    root = Path(results_root)
    if not root.is_dir():
        return records, skipped
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append(Skipped(path, f"unreadable JSON ({exc.__class__.__name__}: {exc})"))
            continue
        reason = check_record(data)
        if reason:
            skipped.append(Skipped(path, reason))
        else:
            records.append(RecordFile(path, data))
    return records, skipped


def newest_per_config(records: list[RecordFile]) -> list[RecordFile]:
    """The newest record of each ``config_hash`` (by ``created``, then path), in path order."""
    best: dict[str, RecordFile] = {}
    for record in records:
        key = record.data["config_hash"]
        current = best.get(key)
        if current is None or (record.data["created"], str(record.path)) > (
            current.data["created"],
            str(current.path),
        ):
            best[key] = record
    chosen = {id(r) for r in best.values()}
    return [r for r in records if id(r) in chosen]
