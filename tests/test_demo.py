"""The demo compares one architecture pretrained vs random-init, says what its interval
covers, and puts the number of independent sources beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from medtransfer import demo
from medtransfer.config import Roots
from medtransfer.jobs.base import JobResult
from medtransfer.models.catalog import get_model_spec


def test_the_compared_pair_differs_in_its_weights_only() -> None:
    pretrained = get_model_spec(demo.PRETRAINED)
    random_init = get_model_spec(demo.RANDOM_INIT)
    assert pretrained.arch == random_init.arch == "tf_efficientnet_lite0"
    assert pretrained.normalization == random_init.normalization
    assert (pretrained.source, random_init.source) == ("package", "random")
    assert all(get_model_spec(name).arch != pretrained.arch for name in demo.EXTRA)


def test_sources_are_counted_per_class_or_said_unknown(tmp_path: Path, roots: Roots) -> None:
    (tmp_path / "a.png").touch()
    with_patients = tmp_path / "patients.csv"
    with_patients.write_text(
        "path,label,patient\na.png,x,p1\na2.png,x,p1\nb.png,y,p2\nc.png,y,p3\n"
    )
    known = demo.DemoSet("t", "t", f"csv:{with_patients}", roots, 2)
    assert demo._sources(known) == "3 (1/2 per class)"
    without = tmp_path / "plain.csv"
    without.write_text("path,label\na.png,x\nb.png,y\n")
    assert demo._sources(demo.DemoSet("t", "t", f"csv:{without}", roots, 2)) == "unknown"


def test_the_output_names_the_comparison_the_interval_and_the_sources(
    roots: Roots, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole demo with the few-shot runs replaced by a fake (the protocol has its own
    tests): every model on both sets, and the table and notes a reader needs."""
    calls: list[tuple[str, str, int]] = []

    def fake_few_shot(data_roots: Roots, data: Any, model: Any, options: Any, run: Any):
        calls.append((data.dataset.split(":")[0], model.model, options.n_way))
        metrics = {"accuracy": 90.0, "accuracy_ci95": 0.5, "accuracy_std": 6.0, "episodes": 200}
        return JobResult(Path("record.json"), {}, metrics, [])

    monkeypatch.setattr(demo, "run_few_shot", fake_few_shot)
    args = argparse.Namespace(quick=True, device="cpu", progress=False)
    assert demo.run_demo(roots, args) == 0
    out = capsys.readouterr().out
    assert calls == [
        ("csv", "efficientnet-lite0", 5),
        ("csv", "random_efficientnet-lite0", 5),
        ("csv", "random_r18", 5),
        ("shenzhencxr", "efficientnet-lite0", 2),
        ("shenzhencxr", "random_efficientnet-lite0", 2),
        ("shenzhencxr", "random_r18", 2),
    ]
    assert "5-shot accuracy % ± (episodes only, 200)" in out
    assert "6 (1/1/1/1/2 per class)" in out  # six source images behind 120 patches
    assert "40 (20/20 per class)" in out  # the quick synthetic tree: one image per patient
    assert "it reflects the resampling of episodes only" in out
    assert "the only difference is the pretraining" in out
    extra = [line for line in out.splitlines() if " random_r18 " in line and "extra" in line]
    assert len(extra) == 2
