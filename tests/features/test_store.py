"""Feature store: one forward pass per image, keyed, atomic, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.data.catalog import resolve_dataset
from medtransfer.data.manifest import build_manifest
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.writers import synthesize
from medtransfer.data.transforms import Preprocessing
from medtransfer.features.store import get_features
from tests.support.features import CountingNet


@pytest.fixture
def manifest(tmp_path: Path):
    synthesize("shenzhencxr", tmp_path, SynthOptions(per_class=5, size=24))
    return build_manifest(resolve_dataset("shenzhencxr", tmp_path))


def _get(net, manifest, root, **kw):
    return get_features(
        net,
        manifest,
        Preprocessing(image_size=16),
        root,
        weights_sha256="w" * 64,
        normalization="none",
        arch="test",
        progress=False,
        **kw,
    )


def test_second_call_runs_no_forward_pass(manifest, tmp_path: Path) -> None:
    net = CountingNet()
    first = _get(net, manifest, tmp_path / "store")
    assert first.computed and net.seen == 10
    assert first.features.shape == (10, 3) and first.features.dtype == np.float32
    second = _get(net, manifest, tmp_path / "store")
    assert not second.computed and net.seen == 10
    assert np.array_equal(np.asarray(first.features), np.asarray(second.features))
    assert isinstance(second.features, np.memmap)
    # rows are stored beside the features, in order
    assert (second.path / "rows.csv").read_text().splitlines()[1].split(",")[0] == (
        manifest.table["path"].iloc[0]
    )


def test_eval_mode_is_enforced(manifest, tmp_path: Path) -> None:
    net = CountingNet().train()
    before = net.bn.running_mean.clone()
    _get(net, manifest, tmp_path / "store")
    assert not net.training
    assert torch.equal(net.bn.running_mean, before)


def test_key_changes_with_preprocessing_and_replaced_file(manifest, tmp_path: Path) -> None:
    net = CountingNet()
    a = _get(net, manifest, tmp_path / "store")
    b = get_features(
        net,
        manifest,
        Preprocessing(image_size=12),
        tmp_path / "store",
        weights_sha256="w" * 64,
        normalization="none",
        arch="test",
        progress=False,
    )
    assert a.key != b.key
    victim = manifest.absolute_paths()[0]
    victim.write_bytes(victim.read_bytes())  # same content, new mtime
    import os

    os.utime(victim, ns=(1, 1))
    c = _get(net, manifest, tmp_path / "store")
    assert c.key != a.key and c.computed


def test_interrupted_extraction_resumes_and_never_reads_complete(manifest, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _get(CountingNet(stop_after=4), manifest, tmp_path / "store", shard_rows=4, batch_size=4)
    complete = [p for p in (tmp_path / "store").iterdir() if (p / "meta.json").exists()]
    assert complete == []
    net = CountingNet()
    resumed = _get(net, manifest, tmp_path / "store", batch_size=4)
    assert net.seen == 6 and resumed.rows_reused == 4 and resumed.rows_computed == 6
    fresh = _get(CountingNet(), manifest, tmp_path / "other")
    assert np.array_equal(np.asarray(resumed.features), np.asarray(fresh.features))
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "store").iterdir())


def test_decoding_workers_give_the_same_features_and_clean_errors(manifest, tmp_path: Path) -> None:
    from medtransfer.errors import ImageDecodeError

    serial = _get(CountingNet(), manifest, tmp_path / "a")
    parallel = _get(CountingNet(), manifest, tmp_path / "b", workers=2)
    assert np.array_equal(np.asarray(serial.features), np.asarray(parallel.features))
    victim = manifest.absolute_paths()[4]
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(ImageDecodeError) as caught:
        _get(CountingNet(), manifest, tmp_path / "c", workers=2)
    message = str(caught.value)
    assert victim.name in message and "Traceback" not in message


def test_split_and_label_policies_share_one_extraction(tmp_path: Path) -> None:
    synthesize("montgomerycxr", tmp_path, SynthOptions(per_class=5, size=24))
    resolved = resolve_dataset("montgomerycxr", tmp_path)
    patient = build_manifest(resolved)
    original = build_manifest(resolved, split_policy="original", val_fraction=0.0)
    assert patient.hash != original.hash
    net = CountingNet()
    first = _get(net, patient, tmp_path / "store")
    second = _get(net, original, tmp_path / "store")
    assert first.computed and not second.computed and net.seen == 10


def test_precision_is_part_of_the_key(manifest, tmp_path: Path) -> None:
    """A store computed in bf16 is never handed to an fp32 run, nor the other way round."""
    net = CountingNet()
    bf16 = _get(net, manifest, tmp_path / "store", precision="bf16")
    assert bf16.computed and net.seen == 10
    fp32 = _get(net, manifest, tmp_path / "store", precision="fp32")
    assert fp32.computed and net.seen == 20 and fp32.key != bf16.key
    again = _get(net, manifest, tmp_path / "store", precision="bf16")
    assert not again.computed and again.key == bf16.key
