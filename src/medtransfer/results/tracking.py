"""Optional experiment tracking: each record as an MLflow run (``pip install
'medtransfer[mlflow]'``). The records stay the source of truth; MLflow gets a copy.

A run holds the record's parameters (nested ones flattened: ``preprocessing.image_size``),
identity (model, dataset, protocol, seed, hashes) as parameters too, every metric of the
results table with its interval (``<metric>_low``/``_high``), tags (label, protocol,
dataset, the record's path) and, as artefacts, the JSON record, its log and its arrays
sidecar. A record already logged to the experiment (same path tag and config hash) is
skipped, so logging twice adds nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.results.collect import RecordFile
from medtransfer.results.table import metric_values

_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
#: MLflow's longest parameter value.
MAX_PARAM = 6000


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        name = prefix + str(key)
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def run_params(record: RecordFile) -> dict[str, str]:
    """The MLflow parameters of a record (keys in MLflow's alphabet, values as text)."""
    data = record.data
    identity = {
        "model": data["model"],
        "dataset": data["dataset"],
        "protocol": data["protocol"],
        "seed": data.get("seed"),
        "weights_sha256": data.get("weights_sha256"),
        "manifest_hash": data.get("manifest_hash"),
        "config_hash": data["config_hash"],
    }
    params = {}
    for key, value in [*identity.items(), *_flatten(data["params"], "params.")]:
        params[_KEY.sub("_", key)] = str(value)[:MAX_PARAM]
    return params


def run_metrics(record: RecordFile) -> dict[str, float]:
    """Every metric of the record (as the results table reads them), with its interval."""
    out: dict[str, float] = {}
    for value in metric_values(record.data["metrics"]):
        key = _KEY.sub("_", value.name)
        if not math.isnan(value.value):
            out[key] = value.value
        if value.has_interval:
            out[f"{key}_low"], out[f"{key}_high"] = value.low, value.high
    return out


def _is_file_store(uri: str) -> bool:
    """A ``file:`` URI or a plain folder path (not ``databricks``, ``http://``, ...)."""
    if uri.startswith("file:"):
        return True
    return not uri.startswith("databricks") and ":" not in uri.split("/", 1)[0]


def log_records(
    records: Sequence[RecordFile], uri: str, *, experiment: str = "medtransfer"
) -> tuple[int, int]:
    """Log each record as an MLflow run under ``experiment`` at tracking ``uri``; returns
    (runs logged, records already there).

    A local folder or ``file:`` URI is MLflow's file store, which recent MLflow versions
    only open with ``MLFLOW_ALLOW_FILE_STORE=true``: set here for such a URI unless the
    environment says otherwise.

    Raises:
        ConfigError: MLflow is not installed, or the tracking store refuses the URI.
    """
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            "--mlflow needs MLflow: pip install 'medtransfer[mlflow]' (records are unchanged)."
        ) from None
    if _is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if "://" not in uri:
            uri = Path(uri).resolve().as_uri()
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        logged = skipped = 0
        for record in records:
            tags = {
                "medtransfer.record": str(record.path),
                "medtransfer.config_hash": record.data["config_hash"],
                "medtransfer.label": record.label,
                "medtransfer.protocol": record.data["protocol"],
                "medtransfer.dataset": record.data["dataset"],
            }
            query = (
                f"tags.`medtransfer.record` = '{_quote(str(record.path))}' and "
                f"tags.`medtransfer.config_hash` = '{record.data['config_hash']}'"
            )
            if client.search_runs([experiment_id], filter_string=query, max_results=1):
                skipped += 1
                continue
            name = f"{record.data['protocol']} {record.label} {record.data['dataset']}"
            run = client.create_run(experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            for key, value in run_params(record).items():
                client.log_param(run_id, key, value)
            for key, value in run_metrics(record).items():
                client.log_metric(run_id, key, value)
            for path in (
                record.path,
                record.path.with_suffix(".log"),
                record.path.with_suffix(".npz"),
            ):
                if path.is_file():
                    client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)
            logged += 1
    except MlflowException as exc:
        raise MedTransferError(f"--mlflow {uri}: MLflow refused: {exc}") from None
    return logged, skipped


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
