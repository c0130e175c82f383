"""``results --mlflow URI``: each record as an MLflow run in a local file store (skipped, by
name, where the optional ``mlflow`` extra is not installed; ``.[test]`` installs it)."""

from __future__ import annotations

import pytest

from medtransfer.results.collect import read_records
from tests.results.conftest import Sweep


def test_records_are_logged_once_with_params_metrics_and_artefacts(sweep: Sweep, tmp_path) -> None:
    mlflow = pytest.importorskip(
        "mlflow", reason="the mlflow extra (pip install 'medtransfer[mlflow]')"
    )
    store = tmp_path / "mlruns"
    status, _ = sweep.cli("results", "--mlflow", str(store), "--where", "protocol=linear")
    assert status == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("medtransfer")
    runs = client.search_runs([experiment.experiment_id])
    records = [r for r in read_records(sweep.roots.results)[0] if r.data["protocol"] == "linear"]
    assert len(runs) == len(records) == 3
    by_path = {run.data.tags["medtransfer.record"]: run for run in runs}
    for record in records:
        run = by_path[str(record.path)]
        assert run.data.params["config_hash"] == record.data["config_hash"]
        assert run.data.params["params.preprocessing.image_size"] == "32"
        accuracy = record.data["metrics"]["accuracy"]
        assert run.data.metrics["accuracy"] == pytest.approx(accuracy)
        assert run.data.metrics["accuracy_low"] == pytest.approx(
            record.data["metrics"]["accuracy_ci"][0]
        )
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        stem = record.path.stem
        assert names == {f"{stem}.json", f"{stem}.log", f"{stem}.npz"}
    status, _ = sweep.cli("results", "--mlflow", str(store), "--where", "protocol=linear")
    assert status == 0 and len(client.search_runs([experiment.experiment_id])) == 3
