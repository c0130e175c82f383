"""The store resumes for real and never hands back rows it did not compute: interrupted
runs, damaged or edited partial stores, a crash before the final rename, a damaged complete
store, and the leftovers of dead runs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from medtransfer import fsutil
from medtransfer.data.transforms import Preprocessing
from medtransfer.features import partial as partial_module
from medtransfer.features.locks import FileLock
from medtransfer.features.store import store_status
from tests.support.features import CountingNet, store_features, tiny_manifest


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory):
    """300 images of 16 px."""
    return tiny_manifest(tmp_path_factory.mktemp("big"), per_class=150)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    """10 images of 16 px."""
    return tiny_manifest(tmp_path_factory.mktemp("small"), per_class=5)


@pytest.fixture(scope="module")
def small_fresh(small, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The features of ``small`` from one uninterrupted extraction."""
    found = store_features(CountingNet(), small, tmp_path_factory.mktemp("fresh"))
    return np.array(found.features)


def _chunks(root: Path) -> list[Path]:
    return sorted(root.glob("*.partial/rows-*.npy"))


def _complete_looking(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if (p / "meta.json").exists()]


def test_interrupted_300_image_extraction_resumes_from_the_last_shard(
    big, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C at 128 of 300
        store_features(CountingNet(stop_after=128), big, root, batch_size=16)
    assert _complete_looking(root) == []
    layout = json.loads(next(root.glob("*.partial/layout.json")).read_text())
    assert layout["shard_rows"] == 16 and layout["n_rows"] == 300
    net = CountingNet()
    resumed = store_features(net, big, root, batch_size=16)
    assert net.seen == 300 - 128  # nothing finished before the interrupt runs again
    assert resumed.rows_reused == 128 and resumed.rows_computed == 172 and resumed.computed
    assert "128 of 300 rows already extracted are reused" in capsys.readouterr().err
    fresh = store_features(CountingNet(), big, tmp_path / "fresh", batch_size=16)
    assert np.array_equal(np.asarray(resumed.features), np.asarray(fresh.features))
    assert [p.name for p in root.iterdir()] == [resumed.path.name]  # no partial, no lock


@pytest.mark.parametrize("flush_seconds", [0.0, 1e9])
def test_shards_are_saved_as_time_passes_not_only_at_the_end(
    small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush_seconds: float
) -> None:
    """A kill -9 gives no chance to save on the way out: what is saved by then is what the
    timer saved (one chunk per batch with a zero interval, none with a long one)."""
    saved: list[int] = []
    real_save = partial_module.PartialStore.write_chunk

    def counting(self, start, block):
        saved.append(len(block))
        return real_save(self, start, block)

    monkeypatch.setattr(partial_module.PartialStore, "write_chunk", counting)
    with pytest.raises(KeyboardInterrupt):
        store_features(
            CountingNet(stop_after=8), small, tmp_path, batch_size=2, flush_seconds=flush_seconds
        )
    # with a zero interval every batch was saved as it finished; with a long one the
    # interrupt saved the 8 finished rows in one chunk on the way out
    assert saved == ([2, 2, 2, 2] if flush_seconds == 0 else [8])


def test_resuming_with_another_shard_size_never_zero_fills(
    small, small_fresh: np.ndarray, tmp_path: Path
) -> None:
    """Interrupted with shard_rows=4, resumed with the default: the recorded layout wins."""
    with pytest.raises(KeyboardInterrupt):
        store_features(CountingNet(stop_after=4), small, tmp_path, shard_rows=4, batch_size=4)
    net = CountingNet()
    resumed = store_features(net, small, tmp_path)
    assert net.seen == 6 and resumed.rows_reused == 4
    assert np.array_equal(np.asarray(resumed.features), small_fresh)
    assert np.abs(np.asarray(resumed.features)).min(axis=1).all()  # no all-zero row


def _interrupted(small, root: Path, stop_after: int = 8) -> list[Path]:
    """Interrupt an extraction of ``small`` after ``stop_after`` images, one 4-row chunk
    saved per batch; returns the chunk files."""
    with pytest.raises(KeyboardInterrupt):
        store_features(
            CountingNet(stop_after=stop_after),
            small,
            root,
            shard_rows=4,
            batch_size=4,
            flush_seconds=0,
        )
    return _chunks(root)


def _forge(path: Path, start: int, stop: int, array: np.ndarray) -> Path:
    """A chunk file holding ``array`` under a name whose checksum is right for it."""
    tmp = path.parent / "forged.tmp"
    np.save(tmp, array)
    tmp = tmp.with_suffix(".tmp.npy")
    digest = partial_module.chunk_digest(tmp, start, stop)
    forged = path.parent / partial_module.chunk_name(start, stop, digest)
    tmp.rename(forged)
    return forged


def _edit(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[-4:] = np.float32(123.0).tobytes()
    chunk.write_bytes(bytes(data))


def _truncate(chunk: Path) -> None:
    chunk.write_bytes(chunk.read_bytes()[:-7])


def _rename(chunk: Path) -> None:  # rows 0-4 handed in as rows 4-8
    for other in chunk.parent.glob("rows-000000004-*.npy"):
        other.unlink()
    digest = chunk.name.split(".")[1]
    chunk.rename(chunk.with_name(f"rows-000000004-000000008.{digest}.npy"))


def _short(chunk: Path) -> None:  # 3 rows for 4, with a right checksum
    array = np.load(chunk)
    chunk.unlink()
    _forge(chunk, 0, 4, array[:3])


def _float64(chunk: Path) -> None:
    array = np.load(chunk)
    chunk.unlink()
    _forge(chunk, 0, 4, array.astype(np.float64))


def _wider(chunk: Path) -> None:  # 5 features a row where the others have 3
    array = np.load(chunk)
    chunk.unlink()
    _forge(chunk, 0, 4, np.concatenate([array, array[:, :2]], axis=1))


@pytest.mark.parametrize("tamper", [_edit, _truncate, _rename, _short, _float64, _wider])
def test_a_damaged_or_edited_chunk_is_computed_again_not_trusted(
    small, small_fresh: np.ndarray, tmp_path: Path, tamper, capsys: pytest.CaptureFixture[str]
) -> None:
    chunks = _interrupted(small, tmp_path)
    assert [c.name[:24] for c in chunks] == ["rows-000000000-000000004", "rows-000000004-000000008"]
    tamper(chunks[0])
    net = CountingNet()
    resumed = store_features(net, small, tmp_path)
    assert np.array_equal(np.asarray(resumed.features), small_fresh)
    assert "discarded" in capsys.readouterr().err
    # the 4 damaged rows run again (and rows 4-8 too where the tampering removed them)
    assert net.seen == (10 if tamper is _rename else 6)


def test_a_partial_store_without_a_valid_layout_is_discarded(
    small, small_fresh: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the old format: shard files, no layout.json (its rows 4-9 came back zero)
    key16 = store_features(CountingNet(), small, tmp_path / "key").path.name
    old = tmp_path / "old" / f"{key16}.partial"
    old.mkdir(parents=True)
    np.save(old / "shard-00000.npy", np.zeros((4, 3), np.float32))
    net = CountingNet()
    found = store_features(net, small, tmp_path / "old")
    assert net.seen == 10 and np.array_equal(np.asarray(found.features), small_fresh)
    assert "no readable layout.json" in capsys.readouterr().err

    # a layout whose shard size was edited: no chunk falls on its boundaries any more
    chunks = _interrupted(small, tmp_path / "edited")
    layout_file = chunks[0].parent / "layout.json"
    layout = json.loads(layout_file.read_text())
    layout_file.write_text(json.dumps({**layout, "shard_rows": 3}))
    net = CountingNet()
    found = store_features(net, small, tmp_path / "edited")
    assert net.seen == 10 and np.array_equal(np.asarray(found.features), small_fresh)

    # a layout that names another store
    chunks = _interrupted(small, tmp_path / "other")
    layout_file = chunks[0].parent / "layout.json"
    layout_file.write_text(json.dumps({**layout, "key": "0" * 64}))
    net = CountingNet()
    found = store_features(net, small, tmp_path / "other")
    assert net.seen == 10 and np.array_equal(np.asarray(found.features), small_fresh)


def test_a_crash_before_the_final_rename_leaves_no_complete_looking_store(
    small, small_fresh: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    key16 = store_features(CountingNet(), small, tmp_path / "key").path.name
    final = tmp_path / "store" / key16

    def crash_at_final_rename(src, dst):
        if Path(dst) == final:
            assert (Path(src) / "meta.json").is_file()  # everything was written ...
            raise KeyboardInterrupt  # ... and the process dies before the rename
        return real_rename(src, dst)

    monkeypatch.setattr(fsutil.os, "rename", crash_at_final_rename)
    with pytest.raises(KeyboardInterrupt):
        store_features(CountingNet(), small, tmp_path / "store")
    monkeypatch.setattr(fsutil.os, "rename", real_rename)
    assert _complete_looking(tmp_path / "store") == []
    assert (
        store_status(
            tmp_path / "store", store_features(CountingNet(), small, tmp_path / "key").key
        ).state
        == "partial"
    )
    net = CountingNet()
    found = store_features(net, small, tmp_path / "store")
    assert net.seen == 0 and found.rows_reused == 10  # every shard was saved: merge only
    assert np.array_equal(np.asarray(found.features), small_fresh)


def test_a_build_folder_left_by_a_killed_merge_is_never_read_and_is_removed(
    small, tmp_path: Path
) -> None:
    done = store_features(CountingNet(), small, tmp_path / "a")
    leftover = tmp_path / "b" / f".{done.path.name}.k1ll3d.tmp"
    shutil.copytree(done.path, leftover)  # complete contents, never renamed
    net = CountingNet()
    found = store_features(net, small, tmp_path / "b")
    assert net.seen == 10 and found.computed
    assert not leftover.exists()


def test_a_damaged_complete_store_is_extracted_again(
    small, small_fresh: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = store_features(CountingNet(), small, tmp_path)
    np.save(done.path / "features.npy", np.asarray(done.features)[:5])  # 5 rows of 10
    assert store_status(tmp_path, done.key).state == "damaged"
    net = CountingNet()
    found = store_features(net, small, tmp_path)
    assert "is damaged" in capsys.readouterr().err
    assert net.seen == 10 and found.features.shape == (10, 3)
    assert np.array_equal(np.asarray(found.features), small_fresh)
    assert store_status(tmp_path, done.key).state == "complete"


def test_partial_stores_of_dead_runs_do_not_accumulate(small, tmp_path: Path) -> None:
    root = tmp_path / "store"
    _interrupted(small, root, stop_after=4)
    first = next(root.glob("*.partial"))
    # another preprocessing, interrupted too: a different recipe, kept while it is recent
    other = Preprocessing(image_size=10)
    with pytest.raises(KeyboardInterrupt):
        store_features(CountingNet(stop_after=4), small, root, preprocessing=other, batch_size=4)
    second = next(p for p in root.glob("*.partial") if p != first)

    victim = small.absolute_paths()[0]  # the data change: same recipe, new key
    before = victim.stat()
    os.utime(victim, ns=(1, 1))
    try:
        store_features(CountingNet(), small, root)
    finally:
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not first.exists()  # superseded: its rows can never be resumed
    assert second.exists()  # another preprocessing, recent: may still be resumed

    old = time.time() - 31 * 86400
    for path in [second, *second.rglob("*")]:
        os.utime(path, (old, old))
    lock = FileLock(root / f"{second.name[:16]}.lock")
    assert lock.acquire(exclusive=False)  # a live process working on it
    store_features(CountingNet(), small, root, preprocessing=Preprocessing(image_size=8))
    assert second.exists()  # never deleted under a live holder
    lock.release()
    store_features(CountingNet(), small, root, preprocessing=Preprocessing(image_size=9))
    assert not second.exists()  # 31 days untouched, nobody holds it
    assert not list(root.glob("*.partial")) and not list(root.glob("*.lock"))
    assert not list(root.glob(".*"))
