"""CIFAR-10/100: the safe batch unpickler, the item loader, the official split, download."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medtransfer.data.manifest import Manifest
from medtransfer.data.sources import cifar
from medtransfer.data.sources.cifar import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR100,
    SPECS,
    download_cifar10,
    load_cifar,
    read_cifar10,
    read_cifar100,
    unpickle_batch,
)
from medtransfer.data.spec import ACCURACY
from medtransfer.data.synth.cifar import synth_cifar10, synth_cifar100
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.py2_pickle import py2_pickle
from medtransfer.errors import DatasetError, DownloadError, ImageDecodeError
from tests.support.archives import write_tar_gz
from tests.support.http_server import serve_directory

SPEC10, SPEC100 = SPECS
FOLDER = "cifar-10-batches-py"


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar") / "CIFAR10"
    synth_cifar10(root, SynthOptions(per_class=8, seed=5))
    return root


def _batch_bytes(labels: list[int], data: np.ndarray, protocol2_bytes_keys: bool) -> bytes:
    if protocol2_bytes_keys:  # what Python 3 writes for a dict with bytes keys
        entry = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data}
        entry[b"filenames"] = [f"img_{i}.png".encode() for i in range(len(labels))]
        return pickle.dumps(entry, protocol=2)
    entry = {"batch_label": "training batch 1 of 5", "labels": labels, "data": data}
    entry["filenames"] = [f"img_{i}.png" for i in range(len(labels))]
    return py2_pickle(entry)  # what Python 2's cPickle wrote (the real files)


def _write_cifar10(root: Path, batches: dict[str, tuple[list[int], np.ndarray]]) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in CIFAR10.files:
        labels, data = batches.get(name, ([], np.zeros((0, 3072), dtype=np.uint8)))
        (folder / name).write_bytes(_batch_bytes(labels, data, protocol2_bytes_keys=True))
    meta = pickle.dumps({b"label_names": [n.encode() for n in CIFAR10_CLASSES]}, protocol=2)
    (folder / "batches.meta").write_bytes(meta)
    return root


def test_spec_facts() -> None:
    assert (SPEC10.name, SPEC10.folder, SPEC10.metric) == ("cifar10", "CIFAR10", ACCURACY)
    assert SPEC10.class_names == CIFAR10_CLASSES
    assert SPEC10.patients == "" and SPEC10.few_shot_resize == "square"
    assert SPEC10.load is load_cifar
    assert (SPEC100.name, SPEC100.folder, len(SPEC100.class_names)) == ("cifar100", "CIFAR100", 100)
    assert list(SPEC100.class_names) == sorted(SPEC100.class_names)
    assert SPEC100.class_names[:3] == ("apple", "aquarium_fish", "baby")


@pytest.mark.parametrize("bytes_keys", [True, False], ids=["python3-protocol2", "python2"])
def test_restricted_unpickler_reads_the_batch_format(tmp_path: Path, bytes_keys: bool) -> None:
    data = np.random.default_rng(0).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_batch_bytes([4, 0, 9], data, bytes_keys))
    entry = unpickle_batch(path)
    assert set(entry) == {"batch_label", "labels", "data", "filenames"}
    assert entry["labels"] == [4, 0, 9]
    assert entry["data"].dtype == np.uint8
    np.testing.assert_array_equal(entry["data"], data)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_1.*refusing to load the global.*system"):
        unpickle_batch(evil)
    assert not marker.exists()
    builtin = tmp_path / "builtin"
    builtin.write_bytes(b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.")
    with pytest.raises(DatasetError, match=r"builtin.*builtins\.eval"):
        unpickle_batch(builtin)
    objects = tmp_path / "objects"
    objects.write_bytes(pickle.dumps({"data": np.array([None, 1], dtype=object)}, protocol=2))
    with pytest.raises(DatasetError, match=r"objects.*dtype"):
        unpickle_batch(objects)
    with pytest.raises(ImageDecodeError, match=r"data_batch_1"):
        load_cifar(evil.with_name("data_batch_1#0"))
    assert not marker.exists()


def test_synthetic_tree_reads_with_classes_counts_and_official_split(
    cifar10_root: Path, manifest_of: Callable[..., Manifest]
) -> None:
    manifest = manifest_of(SPEC10, cifar10_root, split_policy="original", val_fraction=0)
    assert manifest.class_names == CIFAR10_CLASSES
    assert manifest.problems == ()
    assert manifest.table["label"].value_counts().tolist() == [8] * 10
    assert (manifest.table["patient"] == "").all()
    files = manifest.table["path"].str.split("#").str[0].str.split("/").str[1]
    assert (manifest.table["split"] == np.where(files == "test_batch", "test", "train")).all()
    assert (manifest.table["split"] == "test").sum() == 10  # per_class // 6 = 1 per class
    assert set(files) == set(CIFAR10.files)
    assert all(p.name in CIFAR10.files for p in manifest.files())


def test_official_split_and_order_match_torchvision(
    cifar10_root: Path, monkeypatch: pytest.MonkeyPatch, manifest_of: Callable[..., Manifest]
) -> None:
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    train = tv_cifar.CIFAR10(str(cifar10_root), train=True)
    test = tv_cifar.CIFAR10(str(cifar10_root), train=False)
    assert train.classes == list(CIFAR10_CLASSES)
    source = read_cifar10(cifar10_root)
    table = source.table
    for split, dataset in (("train", train), ("test", test)):
        rows = table[table["original_split"] == split].sort_values("original_order")
        assert rows["original_order"].tolist() == list(range(len(dataset)))
        assert rows["label"].tolist() == list(dataset.targets)
        for position in (0, len(dataset) // 2, len(dataset) - 1):
            image = np.asarray(load_cifar(cifar10_root / rows["path"].iloc[position]))
            np.testing.assert_array_equal(image, dataset.data[position])
    # the original's validation hold-out: np.random.seed(0) shuffle of the train positions
    manifest = manifest_of(SPEC10, cifar10_root, split_policy="original")
    positions = np.arange(len(train))
    np.random.seed(0)
    np.random.shuffle(positions)
    val = set(positions[: int(0.2 * len(train))].tolist())
    train_rows = manifest.table.iloc[: len(train)]
    assert {i for i, s in enumerate(train_rows["split"]) if s == "val"} == val


def test_loader_reads_planes_row_major_into_rgb(tmp_path: Path) -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[0, 1] = (255, 0, 0)  # red at row 0, column 1
    image[2, 0] = (0, 255, 0)  # green at row 2, column 0
    image[31, 31] = (0, 0, 77)
    row = image.transpose(2, 0, 1).reshape(1, 3072)  # R plane, G plane, B plane
    root = _write_cifar10(
        tmp_path / "CIFAR10", {"data_batch_3": ([2, 5], np.vstack([row * 0, row]))}
    )
    loaded = load_cifar(root / FOLDER / "data_batch_3#1")
    assert loaded.mode == "RGB" and loaded.size == (32, 32)
    pixels = np.asarray(loaded)
    np.testing.assert_array_equal(pixels, image)
    source = read_cifar10(root)
    assert source.table["path"].tolist() == [f"{FOLDER}/data_batch_3#0", f"{FOLDER}/data_batch_3#1"]
    assert source.table["original_split"].tolist() == ["train", "train"]
    assert source.table["original_order"].tolist() == [0, 1]
    assert {p.kind for p in source.problems} == {"empty-class"}


def test_loader_cache_sees_a_replaced_file(tmp_path: Path) -> None:
    first = np.full((1, 3072), 10, dtype=np.uint8)
    root = _write_cifar10(tmp_path / "CIFAR10", {"test_batch": ([1], first)})
    item = root / FOLDER / "test_batch#0"
    assert np.asarray(load_cifar(item))[0, 0, 0] == 10
    batch = root / FOLDER / "test_batch"
    batch.write_bytes(_batch_bytes([1, 2], np.full((2, 3072), 99, dtype=np.uint8), False))
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    assert np.asarray(load_cifar(item))[0, 0, 0] == 99


def test_loader_errors_name_the_item(cifar10_root: Path) -> None:
    folder = cifar10_root / FOLDER
    with pytest.raises(ImageDecodeError, match=r"data_batch_1#9999.*holds only"):
        load_cifar(folder / "data_batch_1#9999")
    with pytest.raises(ImageDecodeError, match=r"data_batch_1.*<batch file>#<index>"):
        load_cifar(folder / "data_batch_1")
    with pytest.raises(ImageDecodeError, match=r"data_batch_9.*not found"):
        load_cifar(folder / "data_batch_9#0")


def test_patient_policy_splits_by_image(
    cifar10_root: Path, manifest_of: Callable[..., Manifest]
) -> None:
    manifest = manifest_of(SPEC10, cifar10_root)
    assert manifest.params["patient_ids"] is False
    counts = manifest.table.groupby("label")["split"].value_counts().unstack(fill_value=0)
    assert (counts["test"] >= 1).all() and (counts["train"] >= 1).all()
    assert manifest.table["path"].is_unique


def test_layout_errors_and_problems(tmp_path: Path) -> None:
    root = tmp_path / "CIFAR10"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py not found.*datasets synth"):
        read_cifar10(root)
    (root / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="extract it"):
        read_cifar10(root)
    deep = tmp_path / "deep"
    synth_cifar10(deep / "CIFAR10", SynthOptions(per_class=1))
    with pytest.raises(DatasetError, match="one level too deep"):
        read_cifar10(deep)
    shallow = tmp_path / "shallow"
    synth_cifar10(shallow, SynthOptions(per_class=1))
    for file in (shallow / FOLDER).iterdir():
        file.rename(shallow / file.name)
    (shallow / FOLDER).rmdir()
    with pytest.raises(DatasetError, match="one level too shallow"):
        read_cifar10(shallow)
    good = tmp_path / "good"
    synth_cifar10(good, SynthOptions(per_class=2))
    (good / FOLDER / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_4 not found"):
        read_cifar10(good)
    labels = tmp_path / "labels"
    _write_cifar10(labels, {"data_batch_2": ([3, 12], np.zeros((2, 3072), dtype=np.uint8))})
    with pytest.raises(DatasetError, match=r"data_batch_2: item 1 has label 12"):
        read_cifar10(labels)
    meta = tmp_path / "meta"
    _write_cifar10(meta, {"data_batch_1": ([0], np.zeros((1, 3072), dtype=np.uint8))})
    (meta / FOLDER / "batches.meta").write_bytes(py2_pickle({"label_names": ["a", "b"]}))
    problems = read_cifar10(meta).problems
    mismatch = next(p for p in problems if p.kind == "label-mismatch")
    assert mismatch.file == f"{FOLDER}/batches.meta"
    empty = [p.detail for p in problems if p.kind == "empty-class"]
    assert len(empty) == 9 and "automobile" in empty[0]


def test_cifar100_synthetic_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "CIFAR100"
    synth_cifar100(root, SynthOptions(per_class=2, seed=1))
    source = read_cifar100(root)
    assert source.problems == []
    assert len(source.table) == 200
    assert source.table["path"].iloc[0] == "cifar-100-python/train#0"
    assert (source.table["original_split"] == "test").sum() == 100
    image = load_cifar(root / source.table["path"].iloc[-1])
    assert image.size == (32, 32) and image.mode == "RGB"
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    train = tv_cifar.CIFAR100(str(root), train=True)
    assert train.classes == list(CIFAR100.class_names)
    assert source.table["label"].iloc[:100].tolist() == list(train.targets)
    entry = unpickle_batch(root / "cifar-100-python" / "train")
    fine, coarse = entry["fine_labels"][0], entry["coarse_labels"][0]
    superclass = cifar.CIFAR100_SUPERCLASSES[coarse]
    assert CIFAR100.class_names[fine] in superclass[1]


def _archive(folder: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    return write_tar_gz(folder / "cifar-10-python.tar.gz", members, links)


def _upstream_members(tmp_path: Path) -> dict[str, bytes]:
    synth_cifar10(tmp_path / "src", SynthOptions(per_class=2, seed=2))
    members = {
        f"{FOLDER}/{p.name}": p.read_bytes() for p in sorted((tmp_path / "src" / FOLDER).iterdir())
    }
    members[f"{FOLDER}/readme.html"] = b"<html></html>"
    return members


def test_download_extracts_the_upstream_layout(tmp_path: Path) -> None:
    served = tmp_path / "served"
    archive = _archive(served, _upstream_members(tmp_path))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "datasets" / "CIFAR10"
    with serve_directory(served) as server:
        url = server.url("cifar-10-python.tar.gz")
        root = download_cifar10(dest, progress=False, url=url, md5=md5)
        assert root == dest
        assert (dest / "cifar-10-python.tar.gz.sha256").is_file()
        assert len(read_cifar10(root).table) == 20
        assert (dest / FOLDER / "readme.html").is_file()
        assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no staging left
        download_cifar10(dest, progress=False, url=url, md5=md5)
        assert len(server.requests_for("cifar-10-python.tar.gz")) == 1
        (dest / FOLDER / "data_batch_2").unlink()
        with pytest.raises(DownloadError, match=r"cifar-10-batches-py exists but lacks"):
            download_cifar10(dest, progress=False, url=url, md5=md5)


def test_download_refuses_a_wrong_md5(tmp_path: Path) -> None:
    served = tmp_path / "served"
    _archive(served, _upstream_members(tmp_path))
    dest = tmp_path / "cache" / "CIFAR10"
    with serve_directory(served) as server:
        url = server.url("cifar-10-python.tar.gz")
        with pytest.raises(DownloadError, match=r"md5.*c58f30108f718f92721af3b95e74349a"):
            download_cifar10(dest, progress=False, url=url)
    assert not (dest / "cifar-10-python.tar.gz").exists()
    assert not (dest / FOLDER).exists()


@pytest.mark.parametrize(
    ("members", "links", "culprit"),
    [
        ({"../evil": b"x"}, None, r"'\.\./evil'.*'\.\.' component"),
        ({f"{FOLDER}/../../evil": b"x"}, None, r"evil'.*'\.\.' component"),
        ({"/tmp/evil": b"x"}, None, r"'/tmp/evil'.*absolute path"),
        ({}, {f"{FOLDER}/data_batch_1": "/etc/passwd"}, r"data_batch_1'.*link"),
    ],
)
def test_download_refuses_unsafe_archives(
    tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None, culprit: str
) -> None:
    served = tmp_path / "served"
    content = {f"{FOLDER}/batches.meta": b"meta", **members}
    archive = _archive(served, content, links)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "CIFAR10"
    with serve_directory(served) as server:
        url = server.url("cifar-10-python.tar.gz")
        with pytest.raises(DownloadError, match=culprit):
            download_cifar10(dest, progress=False, url=url, md5=md5)
    assert not (tmp_path / "cache" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (dest / FOLDER).exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_cli_download_goes_to_the_cache_and_is_read_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from medtransfer.cli import main
    from medtransfer.data import catalog

    served = tmp_path / "served"
    archive = _archive(served, _upstream_members(tmp_path))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    real = catalog.get_dataset_spec
    with serve_directory(served) as server:
        url = server.url("cifar-10-python.tar.gz")

        def local_spec(name: str):
            spec = real(name)
            if spec.name != "cifar10":
                return spec
            return dataclasses.replace(
                spec,
                download=lambda folder, progress: download_cifar10(
                    folder, progress=progress, url=url, md5=md5
                ),
            )

        monkeypatch.setattr(catalog, "get_dataset_spec", local_spec)
        roots = ["--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")]
        assert main([*roots, "datasets", "download", "-d", "cifar10", "--no-progress"]) == 0
    assert str(tmp_path / "cache" / "datasets" / "CIFAR10") in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # nothing written into the data root
    assert main([*roots, "datasets", "check", "-d", "cifar10", "--no-progress"]) == 0
    assert "20 images" in capsys.readouterr().out


def test_cli_download_of_a_login_dataset_says_where_to_get_it(capsys) -> None:
    from medtransfer.cli import main

    assert main(["datasets", "download", "-d", "chexpert"]) == 2
    err = capsys.readouterr().err
    assert "by hand" in err and "chexpert" in err
