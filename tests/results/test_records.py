"""Records: schema keys, atomic write, log beside, no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtransfer.results.records import (
    SCHEMA_VERSION,
    Record,
    environment_info,
    outputs_folder,
    write_record,
)


def _record(**overrides) -> Record:
    fields = dict(
        protocol="few-shot",
        model="random_r18",
        dataset="shenzhencxr",
        params={"n_way": 2, "split_policy": "patient"},
        seed=0,
        metrics={"accuracy": 73.76, "accuracy_ci95": 0.66},
        weights_sha256="a" * 64,
        manifest_hash="b" * 64,
        timings={"extraction_s": 1.0},
        environment=environment_info("cpu"),
    )
    fields.update(overrides)
    return Record(**fields)


def test_record_has_schema_keys_and_log(tmp_path: Path) -> None:
    path = write_record(tmp_path, _record(), ["INFO:root:Test Acc = 73.76% +- 0.66%"])
    assert path.parent == tmp_path / "few-shot" / "random_r18" / "shenzhencxr"
    data = json.loads(path.read_text())
    for key in (
        "schema_version",
        "protocol",
        "model",
        "dataset",
        "params",
        "seed",
        "metrics",
        "weights_sha256",
        "manifest_hash",
        "timings",
        "environment",
    ):
        assert key in data
    assert data["schema_version"] == SCHEMA_VERSION
    for key in ("medtransfer", "git_commit", "torch", "device"):
        assert key in data["environment"]
    assert path.with_suffix(".log").read_text().startswith("INFO:root:Test Acc")
    assert not list(path.parent.glob(".*.tmp"))


def test_repeated_runs_never_overwrite(tmp_path: Path) -> None:
    record = _record()
    a = write_record(tmp_path, record, [])
    b = write_record(tmp_path, record, [])
    assert a != b and a.exists() and b.exists()


def test_output_files_are_complete_before_the_record_appears(tmp_path: Path) -> None:
    seen: list[bool] = []

    def outputs(folder: Path) -> None:
        (folder / "a").mkdir()
        (folder / "a" / "picture.png").write_bytes(b"png")
        seen.append(any(tmp_path.rglob("*.json")))

    path = write_record(tmp_path, _record(protocol="reconstruction"), [], outputs=outputs)
    assert seen == [False]
    assert outputs_folder(path) == path.with_suffix("")
    assert (outputs_folder(path) / "a" / "picture.png").read_bytes() == b"png"
    again = write_record(tmp_path, _record(protocol="reconstruction"), [], outputs=outputs)
    assert outputs_folder(again) != outputs_folder(path)

    def broken(folder: Path) -> None:
        (folder / "half.png").write_bytes(b"p")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_record(tmp_path / "other", _record(), [], outputs=broken)
    assert not [p for p in (tmp_path / "other").rglob("*") if p.is_file()]


def test_config_hash_ignores_outputs() -> None:
    assert _record().config_hash() == _record(metrics={"accuracy": 1.0}).config_hash()
    assert _record().config_hash() != _record(seed=1).config_hash()


def test_user_dataset_names_are_safe_folder_names(tmp_path: Path) -> None:
    path = write_record(tmp_path, _record(dataset="csv:/data/x/labels.csv"), [])
    assert path.is_relative_to(tmp_path)
    assert ":" not in path.parent.name


def test_the_folder_is_the_label_so_other_weights_never_share_it(tmp_path: Path) -> None:
    from medtransfer.results.records import record_folder

    baseline = _record()
    tuned = _record(
        label="random_r18@ckpt", weights_file={"path": "/w/ckpt.pt", "sha256": "c" * 64}
    )
    assert record_folder(tmp_path, baseline) == tmp_path / "few-shot" / "random_r18" / "shenzhencxr"
    assert (
        record_folder(tmp_path, tuned) == tmp_path / "few-shot" / "random_r18@ckpt" / "shenzhencxr"
    )
    data = json.loads(write_record(tmp_path, tuned, []).read_text())
    assert data["label"] == "random_r18@ckpt" and data["weights_file"]["sha256"] == "c" * 64
    assert baseline.config_hash() != tuned.config_hash()  # the label is part of the run


def test_run_labels_keep_catalog_folders_for_the_catalogs_own_weights() -> None:
    import pytest

    from medtransfer.errors import ConfigError
    from medtransfer.results.records import run_label

    catalog = ("random_r18", "supervised_r18", "supervised")
    ckpt = Path("/runs/finetuned.pt")
    assert run_label("random_r18", None, None, catalog) == "random_r18"
    assert run_label("random_r18", None, ckpt, catalog) == "random_r18@finetuned"
    assert run_label("random_r18", "my-run", ckpt, catalog) == "my-run"
    assert run_label("supervised_r18", "supervised_r18", None, catalog) == "supervised_r18"
    for label, weights in (("random_r18", ckpt), ("Supervised", None), ("supervised_r18", ckpt)):
        with pytest.raises(ConfigError, match="names a catalog model"):
            run_label("random_r18", label, weights, catalog)
    with pytest.raises(ConfigError, match="must not be empty"):
        run_label("random_r18", " ", None, catalog)


def test_arrays_go_to_a_sidecar_named_in_the_record(tmp_path: Path) -> None:
    import numpy as np

    from medtransfer.results.sidecar import load_sidecar, sidecar_path

    arrays = {"episode_accuracy": np.full((1, 4), 0.5, dtype=np.float32)}
    path = write_record(tmp_path, _record(), [], arrays)
    data = json.loads(path.read_text())
    assert data["arrays"] == {
        "file": sidecar_path(path).name,
        "contents": {"episode_accuracy": {"shape": [1, 4], "dtype": "float32"}},
    }
    loaded = load_sidecar(path)
    assert loaded is not None and np.array_equal(
        loaded["episode_accuracy"], arrays["episode_accuracy"]
    )
    plain = write_record(tmp_path, _record(seed=1), [])
    assert "arrays" not in json.loads(plain.read_text()) and load_sidecar(plain) is None
    sidecar_path(plain).write_bytes(b"not a zip")
    assert load_sidecar(plain) is None  # a damaged sidecar reads as none


def _write_many(results: Path, created: str, count: int, start: float) -> list[str]:
    """Wait until ``start``, then write ``count`` records created in the same second."""
    import time

    time.sleep(max(0.0, start - time.time()))
    return [str(write_record(results, _record(created=created), ["x"])) for _ in range(count)]


def test_processes_writing_in_the_same_second_never_pick_the_same_name(tmp_path: Path) -> None:
    import multiprocessing
    import time

    created = "2026-01-01T00:00:00Z"
    start = time.time() + 1.0  # every process starts writing at this moment
    with multiprocessing.get_context("fork").Pool(6) as pool:
        parts = pool.starmap(_write_many, [(tmp_path, created, 5, start)] * 6)
    paths = [path for part in parts for path in part]
    assert len(set(paths)) == len(paths) == 30
    folder = tmp_path / "few-shot" / "random_r18" / "shenzhencxr"
    assert len(list(folder.glob("*.json"))) == 30 and len(list(folder.glob("*.log"))) == 30
    for path in paths:  # every file is one whole record, with its own log
        assert json.loads(Path(path).read_text())["created"] == created
        assert Path(path).with_suffix(".log").read_text() == "x\n"


def test_record_context_adds_keys_to_the_records_built_inside_it(tmp_path: Path) -> None:
    from medtransfer.results.records import record_context

    with record_context(sweep={"cell": "c" * 64}):
        inside = json.loads(write_record(tmp_path, _record(), []).read_text())
    outside = json.loads(write_record(tmp_path, _record(), []).read_text())
    assert inside["sweep"] == {"cell": "c" * 64} and "sweep" not in outside
    assert inside["config_hash"] == outside["config_hash"]
