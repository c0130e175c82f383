"""`features extract` / `features status` through the command line: three concurrent
`--part i/3` processes (forked, each running the command) build the same bits as one
extraction, status says where a store
stands, and a protocol afterwards reads the store without a forward pass."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.cli import main
from medtransfer.features import extraction

FLAGS = [
    "-d",
    "shenzhencxr",
    "-m",
    "random_r18",
    "--image-size",
    "32",
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--for",
    "few-shot",
    "--no-progress",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    args = ["datasets", "synth", "--dataset", "shenzhencxr", "--out", str(root)]
    assert main([*args, "--per-class", "12", "--size", "48"]) == 0
    return root


CTX = multiprocessing.get_context("fork")


def _extract_in_a_process(data_root: Path, cache: Path, out: Path, *extra: str) -> None:
    """A process running `medtransfer features extract` (what it prints goes to ``out``)."""
    torch.set_num_threads(1)  # the same arithmetic in every process
    args = ["--data-root", str(data_root), "--cache-dir", str(cache), "features", "extract"]
    with open(out, "w") as handle, contextlib.redirect_stdout(handle):
        code = main([*args, *FLAGS, *extra])
    os._exit(code)


def _run_concurrently(*commands: tuple[Path, Path, Path, tuple[str, ...]]) -> list[str]:
    processes = [
        CTX.Process(target=_extract_in_a_process, args=(data, cache, out, *extra))
        for data, cache, out, extra in commands
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    return [out.read_text() for _, _, out, _ in commands]


def _store(cache: Path) -> Path:
    (folder,) = (cache / "features" / "random_r18" / "shenzhencxr").iterdir()
    return folder


def test_three_concurrent_parts_equal_one_extraction_bit_for_bit(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = tmp_path / "parts"
    outputs = _run_concurrently(
        *[(data_root, parts, tmp_path / f"{i}.txt", ("--part", f"{i}/3")) for i in (1, 2, 3)]
    )
    printed = "".join(outputs)
    for i in (1, 2, 3):  # 24 rows, 6 shards of 4 (one batch), 2 shards a part
        assert f"part {i}/3: shards {2 * i - 2}-{2 * i - 1} (8 rows): 8 extracted now" in printed
    assert printed.count("completed the store") == 1  # finished once, by the last one
    (single,) = _run_concurrently((data_root, tmp_path / "single", tmp_path / "all.txt", ()))
    assert "extracted now: 24 rows" in single
    merged, alone = _store(parts), _store(tmp_path / "single")
    assert merged.name == alone.name  # the same key
    a, b = np.load(merged / "features.npy"), np.load(alone / "features.npy")
    assert a.shape == (24, 512) and a.tobytes() == b.tobytes()
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["parts_done"] == ["1/3", "2/3", "3/3"] and meta["shard_rows"] == 4

    # a protocol with the same flags reads the store: no forward pass at all
    def no_forward(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("few-shot must read the store `features extract` made")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extraction.Forward, "run", no_forward)
        few_shot = ["few-shot", *FLAGS[:-3], "--no-progress", "--n-way", "2", "--iter-num", "20"]
        roots = ["--data-root", str(data_root), "--cache-dir", str(parts)]
        assert main([*roots, *few_shot, "--n-support", "5", "--n-query", "5"]) == 0
    assert "features: read from the feature store" in capsys.readouterr().out


def test_status_says_absent_partial_with_its_parts_and_complete(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = ["--data-root", str(data_root), "--cache-dir", str(tmp_path / "cache")]
    status = [*roots, "features", "status", *FLAGS]
    assert main(status) == 0
    out = capsys.readouterr().out
    assert "features for few-shot: shenzhencxr (24 images) x random_r18, 32 px square" in out
    assert "store: absent: nothing extracted yet" in out

    assert main([*roots, "features", "extract", *FLAGS, "--part", "2/3"]) == 0
    out = capsys.readouterr().out
    assert "part 2/3: shards 2-3 (8 rows): 8 extracted now, 0 already there" in out
    assert "store: partial: 8 of 24 rows (2 of 6 shards of 4 rows); parts done: 2/3" in out
    assert "completed by whichever part finishes last" in out
    assert main(status) == 0
    assert "store: partial: 8 of 24 rows (2 of 6 shards of 4 rows); parts done: 2/3" in (
        capsys.readouterr().out
    )

    # the whole extraction reuses the part and completes the store
    assert main([*roots, "features", "extract", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "extracted now: 16 rows" in out and "(8 reused" in out
    assert main(status) == 0
    assert "store: complete: 24 rows x 512 features in " in capsys.readouterr().out
    assert main([*roots, "features", "extract", *FLAGS, "--part", "1/3"]) == 0
    assert "nothing left" in capsys.readouterr().out


def test_bad_part_flags_are_named(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data-root", str(data_root), "features", "extract", *FLAGS, "--part", "4/3"]
    assert main(args) == 2
    assert "part 4/3 does not exist" in capsys.readouterr().err


def test_a_preset_applies_the_protocols_settings_that_the_features_commands_have(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medtransfer.errors import ConfigError
    from medtransfer.jobs import registry
    from medtransfer.jobs.base import Job
    from medtransfer.jobs.features import resolve_options

    settings = {"precision": "fp32", "image_size": 256, "use_prepared": False, "solver": "sklearn"}
    job = Job("linear", registry.get_job("linear").run, None, presets={"original": settings})
    monkeypatch.setattr(registry, "get_job", lambda name: job)
    given = {"dataset": "shenzhencxr", "model": "random_r18", "image_size": 128}
    data, model, features, run = resolve_options(given, "original")
    assert data.dataset == "shenzhencxr" and model.model == "random_r18"
    assert features.image_size == 128  # what the user gave wins
    assert run.precision == "fp32" and run.use_prepared is False and run.preset == "original"
    assert run.preset_settings == {"precision": "fp32", "use_prepared": False}
    monkeypatch.setattr(registry, "get_job", lambda name: Job("linear", job.run, None))
    with pytest.raises(ConfigError, match="linear has no preset 'original'; it offers: none"):
        resolve_options(given, "original")
