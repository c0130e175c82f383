"""``compare``: sidecars written by the jobs, a planted difference found and a planted tie
not flagged from records, reuse of matching records, and the end-to-end command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtransfer.results.collect import RecordFile, read_records
from medtransfer.results.compare import adjust, compare_group
from medtransfer.results.sidecar import (
    episode_arrays,
    episodes_digest,
    load_sidecar,
    row_arrays,
    sidecar_path,
)
from tests.results.conftest import SWEEP_MODELS, Sweep, hand_record


def _read(path: Path) -> RecordFile:
    return RecordFile(path, json.loads(path.read_text()))


def _episode_record(root: Path, model: str, accuracies: np.ndarray, digest: str) -> RecordFile:
    path = hand_record(
        root,
        protocol="few-shot",
        model=model,
        params={"n_way": 2},
        metrics={"accuracy": float(accuracies.mean() * 100), "accuracy_ci95": 0.5},
        arrays=episode_arrays([0], [accuracies], [digest]),
    )
    return _read(path)


def test_planted_episode_difference_found_and_tie_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.4, 0.95, size=400)
    digest = episodes_digest(np.zeros((400, 2)), np.zeros((400, 2, 5)), np.ones((400, 2, 15)))
    strong = _episode_record(tmp_path, "byol", np.clip(difficulty + 0.03, 0, 1), digest)
    weak = _episode_record(tmp_path, "swav", difficulty, digest)
    twin = _episode_record(tmp_path, "pirl", difficulty.copy(), digest)
    group = compare_group("few-shot", "shenzhencxr", [weak, strong, twin])
    adjust([group])
    assert group.ranking[0].label == "byol"
    verdicts = {frozenset((p.a, p.b)): p for p in group.pairs}
    assert (
        verdicts[frozenset(("byol", "swav"))].verdict().startswith("byol beats swav by 3.00 points")
    )
    assert verdicts[frozenset(("byol", "pirl"))].detected()
    tie = verdicts[frozenset(("swav", "pirl"))]
    assert not tie.detected() and "no detectable difference" in tie.verdict()
    assert group.unpaired == []


def test_different_episodes_are_not_paired(tmp_path: Path) -> None:
    accuracies = np.full(50, 0.8)
    a = _episode_record(tmp_path, "byol", accuracies, "a" * 64)
    b = _episode_record(tmp_path, "swav", accuracies, "b" * 64)
    group = compare_group("few-shot", "shenzhencxr", [a, b])
    assert group.pairs == [] and "scored on different episodes" in group.unpaired[0]


def _row_record(
    root: Path, model: str, y: np.ndarray, correct: np.ndarray, manifest: str = "m" * 64
) -> RecordFile:
    scores = np.eye(2)[np.where(correct, y, 1 - y)]
    path = hand_record(
        root,
        protocol="linear",
        model=model,
        params={"metric": "accuracy"},
        metrics={"accuracy": float(correct.mean() * 100), "accuracy_ci": [0.0, 100.0]},
        arrays=row_arrays(np.arange(len(y)) + 1000, y, [scores], [-1], 2),
        manifest_hash=manifest,
    )
    return _read(path)


def test_planted_row_difference_found_and_tie_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=150)
    good = rng.uniform(size=150) < 0.92
    poor = good & (rng.uniform(size=150) < 0.7)  # the same rows plus more errors
    records = [
        _row_record(tmp_path, "byol", y, good),
        _row_record(tmp_path, "swav", y, poor),
        _row_record(tmp_path, "pirl", y, good.copy()),
    ]
    group = compare_group("linear", "shenzhencxr", records, resamples=400)
    adjust([group])
    verdicts = {frozenset((p.a, p.b)): p for p in group.pairs}
    assert verdicts[frozenset(("byol", "swav"))].detected()
    assert verdicts[frozenset(("pirl", "swav"))].detected()
    assert not verdicts[frozenset(("byol", "pirl"))].detected()
    other_split = _row_record(tmp_path, "moco-v2", y, good, manifest="x" * 64)
    group = compare_group("linear", "shenzhencxr", [records[0], other_split])
    assert group.pairs == [] and "different test rows" in group.unpaired[0]


def test_jobs_write_what_a_paired_test_needs(sweep: Sweep) -> None:
    records, _ = read_records(sweep.roots.results)
    for record in records:
        arrays = load_sidecar(record.path)
        assert (
            arrays is not None and record.data["arrays"]["file"] == sidecar_path(record.path).name
        )
        protocol = record.data["protocol"]
        if protocol == "few-shot":
            accuracies = arrays["episode_accuracy"]
            assert accuracies.shape == (1, 60) and arrays["episodes_sha256"].shape == (1,)
            assert accuracies.mean() * 100 == pytest.approx(
                record.data["metrics"]["accuracy"], abs=1e-4
            )
        else:
            m = len(arrays["test_rows"])
            assert arrays["scores"].shape[1:] == (m, 2) and arrays["y_true"].shape == (m,)
            if protocol == "knn":
                assert list(arrays["runs"]) == record.params["ks"]
            else:
                assert list(arrays["runs"]) == [-1]
    few = [load_sidecar(r.path) for r in records if r.data["protocol"] == "few-shot"]
    assert len({str(f["episodes_sha256"][0]) for f in few}) == 1  # the same episodes for all


def test_compare_prints_rankings_and_paired_verdicts(sweep: Sweep) -> None:
    text = sweep.compare_output
    for protocol in ("few-shot", "linear", "knn"):
        assert f"{protocol} on shenzhencxr:" in text
    assert text.count("paired verdicts (Holm over 9 comparisons, level 0.05):") == 3
    verdicts = [line for line in text.splitlines() if line.startswith("  ")]
    assert len(verdicts) == 9
    assert all(" beats " in v or v.startswith("  no detectable difference") for v in verdicts)
    assert text.count(": ran ") == 9


def test_compare_reuses_matching_records(sweep: Sweep) -> None:
    before = sorted(sweep.roots.results.rglob("*.json"))
    flags = ["--n-support", "3", "--n-query", "4", "--iter-num", "60", "-i", "32"]
    models = [flag for model in SWEEP_MODELS[:2] for flag in ("-m", model)]
    status, text = sweep.cli(
        "compare", "-d", "shenzhencxr", *models, *flags, "--device", "cpu", "--no-progress"
    )
    assert status == 0 and text.count(": reused ") == 6 and ": ran " not in text
    assert sorted(sweep.roots.results.rglob("*.json")) == before


def test_compare_rejects_bad_requests(sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = sweep.cli("compare", "-d", "shenzhencxr", "-m", "random_r18")
    assert status == 2 and "at least two models" in capsys.readouterr().err
    status, _ = sweep.cli("compare", "-d", "shenzhencxr", "-m", "a,b", "--protocol", "finetune")
    assert status == 2 and "compare pairs few-shot, linear, knn" in capsys.readouterr().err
