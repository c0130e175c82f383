"""The TensorFlow checkpoint reader, checked against checkpoints TensorFlow itself writes.

TensorFlow writes the fixtures and reads them back as the reference; the reader under test
never imports it. TensorFlow runs in a child process: loaded into the test process it
breaks torch (TF 2.21 + torch 2.14: importing ``torch._dynamo``/triton, e.g. through
``torchvision``, after ``tensorflow`` segfaults), and it keeps its threads to itself.
Without TensorFlow installed (it is in the ``test`` extras) these tests are skipped, and
named in the summary; under ``CI=true`` they fail (``tests/support/requires.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from medtransfer.errors import ModelError
from medtransfer.models.convert import tf_checkpoint
from medtransfer.models.convert.tf_checkpoint import (
    FOOTER_SIZE,
    crc32c,
    list_tf_checkpoint,
    mask_crc,
    read_tf_checkpoint,
    unmask_crc,
)
from tests.support.requires import requires

# Runs in the child: writes each job's variables with the v1 Saver (exact names, fed
# through placeholders so big arrays stay out of the graph), then, if asked, records what
# tf.train.load_checkpoint / list_variables read back.
_TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
for job in json.loads(sys.argv[1]):
    arrays = np.load(job["arrays"])
    graph, feeds, saved = tf.Graph(), {}, []
    with graph.as_default():
        for name in job["names"]:
            value = arrays[name]
            holder = v1.placeholder(tf.as_dtype(value.dtype), shape=value.shape)
            saved.append(v1.get_variable(name, initializer=holder, use_resource=False))
            feeds[holder] = value
        for name, shape, dtype in job["partitioned"]:
            saved.append(v1.get_variable(
                name, shape=shape, dtype=tf.as_dtype(dtype), use_resource=False,
                initializer=v1.zeros_initializer(), partitioner=v1.fixed_size_partitioner(2)))
        saver = v1.train.Saver(var_list=saved)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer(), feed_dict=feeds)
            prefix = saver.save(session, job["folder"] + "/model.ckpt", global_step=job["step"],
                                write_meta_graph=job["meta_graph"])
    if job["reference"]:
        reader = tf.train.load_checkpoint(prefix)
        listing = tf.train.list_variables(prefix)
        values = {n: reader.get_tensor(n) for n, _ in listing} if job["values"] else {}
        np.savez(job["reference"] + ".npz", **{n: v for n, v in values.items()
                                               if np.asarray(v).dtype != object})
        with open(job["reference"] + ".json", "w") as out:
            json.dump({"prefix": prefix, "listing": listing}, out)
    else:
        with open(job["folder"] + "/.prefix", "w") as out:
            out.write(prefix)
"""


@dataclass
class TFJob:
    """One checkpoint for TensorFlow to write into ``folder`` (``model.ckpt[-step]``).

    ``partitioned``: name -> (shape, dtype) of zero-filled variables split in two slices by
    ``fixed_size_partitioner``. ``reference``: also record what TensorFlow reads back:
    ``"listing"`` (names and shapes) or ``"values"`` (and every numeric tensor).
    """

    folder: Path
    variables: Mapping[str, np.ndarray]
    step: int | None = None
    partitioned: Mapping[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    meta_graph: bool = False
    reference: str = ""


@dataclass
class TFWritten:
    """What TensorFlow wrote: the prefix and, when asked, its own reading of the file."""

    prefix: Path
    values: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]


def write_with_tensorflow(jobs: list[TFJob], work: Path) -> list[TFWritten]:
    """Run TensorFlow once, in a child process, to write every job's checkpoint."""
    requires("tensorflow", "writes the reference checkpoints")
    specs = []
    for i, job in enumerate(jobs):
        job.folder.mkdir(parents=True, exist_ok=True)
        arrays = work / f"job{i}.npz"
        np.savez(arrays, **{name: np.asarray(v) for name, v in job.variables.items()})
        specs.append(
            {
                "folder": str(job.folder),
                "arrays": str(arrays),
                "names": list(job.variables),
                "step": job.step,
                "partitioned": [[n, list(s), d] for n, (s, d) in job.partitioned.items()],
                "meta_graph": job.meta_graph,
                "reference": str(work / f"job{i}.reference") if job.reference else "",
                "values": job.reference == "values",
            }
        )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, json.dumps(specs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"TensorFlow failed:\n{done.stderr[-3000:]}"
    return [_written(spec) for spec in specs]


def _written(spec: dict[str, object]) -> TFWritten:
    folder, reference = Path(str(spec["folder"])), str(spec["reference"])
    if not reference:
        marker = folder / ".prefix"
        prefix = Path(marker.read_text())
        marker.unlink()
        return TFWritten(prefix, {}, {})
    info = json.loads(Path(reference + ".json").read_text())
    with np.load(reference + ".npz") as values:
        read = {name: values[name] for name in values.files}
    shapes = {name: tuple(shape) for name, shape in info["listing"]}
    return TFWritten(Path(info["prefix"]), read, shapes)


def _variety() -> dict[str, np.ndarray]:
    """Many names (several data blocks, restart points), dtypes, and sizes."""
    rng = np.random.default_rng(0)
    variables: dict[str, np.ndarray] = {
        "scalar_f32": np.float32(3.5),
        "global_step": np.int64(225206),
        "f64/matrix": rng.standard_normal((3, 5)),
        "f16/vector": rng.standard_normal(7).astype(np.float16),
        "i32/values": rng.integers(-(2**31), 2**31 - 1, size=(4, 4), dtype=np.int32),
        "i64/values": rng.integers(-(2**62), 2**62, size=9, dtype=np.int64),
        "i8/values": rng.integers(-128, 127, size=5, dtype=np.int8),
        "u8/values": rng.integers(0, 255, size=(2, 3), dtype=np.uint8),
        "i16/values": rng.integers(-(2**15), 2**15 - 1, size=6, dtype=np.int16),
        "bool/mask": rng.random(11) > 0.5,
        "empty/rows": np.zeros((0, 3), np.float32),
        "big/kernel": rng.standard_normal((3, 3, 256, 512)).astype(np.float32),  # 4.5 MB
        "mid/kernel": rng.standard_normal((1, 1, 128, 200)).astype(np.float32),  # 100 KB
        "odd/kernel": rng.standard_normal(1025 * 3 + 1).astype(np.float32),
    }
    for i in range(300):  # shared prefixes -> prefix compression over several 4 KB blocks
        variables[f"base_model/batch_normalization_{i}/moving_variance"] = rng.random(
            i % 5 + 1, dtype=np.float32
        )
    return variables


@pytest.fixture(scope="module")
def tf_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TFWritten]:
    """Checkpoints TensorFlow wrote (one child process for the whole module).

    ``variety``: many names, dtypes and sizes, with TensorFlow's own reading of it.
    ``odd``: a string variable and a partitioned one next to an int32 one.
    """
    work = tmp_path_factory.mktemp("tfckpt")
    odd = {"words": np.array([b"a", b"bc"]), "kept": np.arange(3, dtype=np.int32)}
    variety, odd_written = write_with_tensorflow(
        [
            TFJob(work / "variety", _variety(), step=7, reference="values"),
            TFJob(work / "odd", odd, partitioned={"split/kernel": ((4, 3), "float32")}),
        ],
        work,
    )
    return {"variety": variety, "odd": odd_written}


@pytest.fixture(scope="module")
def tf_written(tf_checkpoints: dict[str, TFWritten]) -> TFWritten:
    """The ``variety`` checkpoint."""
    return tf_checkpoints["variety"]


@pytest.fixture
def ckpt_copy(tf_written: TFWritten, tmp_path: Path) -> Path:
    """A private copy of the checkpoint to damage; returns its prefix."""
    prefix = tf_written.prefix
    for file in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(file, tmp_path / file.name)
    return tmp_path / prefix.name


# --------------------------------------------------------------------------- agreement with TF


def test_reads_what_tensorflow_reads(tf_written: TFWritten) -> None:
    prefix, reference = tf_written.prefix, tf_written.values
    index = prefix.with_name(prefix.name + ".index")
    assert index.stat().st_size > 3 * 4096  # several data blocks in the SSTable
    ours = read_tf_checkpoint(prefix)
    assert list(ours) == sorted(reference)
    for name, expected in reference.items():
        got = ours[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert ours["global_step"] == 225206
    assert ours["big/kernel"].flags.writeable


def test_list_matches_tensorflow(tf_written: TFWritten) -> None:
    prefix = tf_written.prefix
    listed = list_tf_checkpoint(prefix.with_name(prefix.name + ".index"))
    assert {name: entry.shape for name, entry in listed.items()} == tf_written.shapes
    assert listed["big/kernel"].dtype_name == "float32"
    assert listed["global_step"].dtype_name == "int64"


def test_select_reads_only_some(tf_written: TFWritten) -> None:
    prefix, reference = tf_written.prefix, tf_written.values
    got = read_tf_checkpoint(prefix, select=lambda name: name.startswith("i"))
    assert sorted(got) == ["i16/values", "i32/values", "i64/values", "i8/values"]
    np.testing.assert_array_equal(got["i64/values"], reference["i64/values"])


def test_crc32c_matches_tensorflow_checksums(tf_written: TFWritten) -> None:
    """Every stored (masked) crc32c, computed by TensorFlow, equals ours of the bytes."""
    prefix = tf_written.prefix
    data = prefix.with_name(prefix.name + ".data-00000-of-00001").read_bytes()
    entries = list_tf_checkpoint(prefix)
    checked = 0
    for entry in entries.values():
        assert entry.crc32c is not None
        raw = data[entry.offset : entry.offset + entry.size]
        assert mask_crc(crc32c(raw)) == entry.crc32c
        checked += entry.size
    assert checked > 4_000_000  # the vectorised path ran on the big kernel


# --------------------------------------------------------------------------- crc32c


def test_crc32c_known_values_and_paths() -> None:
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector
    assert crc32c(bytes(range(32))) == 0x46DD794E
    rng = np.random.default_rng(1)
    for size in (4095, 4096, 5000, 70_001, (1 << 20) + 3):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        reference = tf_checkpoint._update_bytewise(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert crc32c(data) == reference, size
        assert crc32c(data[size // 3 :], crc32c(data[: size // 3])) == reference, size
    for value in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert unmask_crc(mask_crc(value)) == value


# --------------------------------------------------------------------------- damaged files


def _data_file(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".data-00000-of-00001")


def _index_file(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def test_flipped_data_byte_fails_its_checksum(ckpt_copy: Path) -> None:
    entry = list_tf_checkpoint(ckpt_copy)["mid/kernel"]
    data = bytearray(_data_file(ckpt_copy).read_bytes())
    data[entry.offset + 10] ^= 0x40
    _data_file(ckpt_copy).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"data-00000-of-00001 is corrupt.*mid/kernel"):
        read_tf_checkpoint(ckpt_copy)
    unchecked = read_tf_checkpoint(ckpt_copy, verify_crc=False)  # still readable on request
    assert unchecked["mid/kernel"].shape == (1, 1, 128, 200)


def test_truncated_or_missing_data_file(ckpt_copy: Path) -> None:
    data = _data_file(ckpt_copy)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"data-00000-of-00001 is truncated"):
        read_tf_checkpoint(ckpt_copy)
    data.unlink()
    with pytest.raises(ModelError, match=r"needs the data file .*data-00000-of-00001.*missing"):
        read_tf_checkpoint(ckpt_copy)


def test_bad_magic_and_truncated_index(ckpt_copy: Path) -> None:
    index = _index_file(ckpt_copy)
    raw = index.read_bytes()
    index.write_bytes(raw[:-1] + b"\x00")
    with pytest.raises(ModelError, match=rf"{index.name} is not valid \(bad magic number"):
        read_tf_checkpoint(ckpt_copy)
    index.write_bytes(raw[:20])
    with pytest.raises(ModelError, match="shorter than the 48-byte footer"):
        list_tf_checkpoint(ckpt_copy)
    index.write_bytes(raw[: len(raw) // 2] + raw[-FOOTER_SIZE:])
    with pytest.raises(ModelError, match=rf"{index.name} is not valid"):
        read_tf_checkpoint(ckpt_copy)


def test_flipped_index_byte_fails_the_block_checksum(ckpt_copy: Path) -> None:
    index = _index_file(ckpt_copy)
    raw = bytearray(index.read_bytes())
    position = raw.find(b"i32/values")
    raw[position + 1] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum mismatch in the block"):
        list_tf_checkpoint(ckpt_copy)


def test_snappy_block_is_refused_clearly(ckpt_copy: Path) -> None:
    """A block whose trailer says snappy (TF 1.0/1.1 tables) is named, not misparsed."""
    index = _index_file(ckpt_copy)
    raw = bytearray(index.read_bytes())
    footer = bytes(raw[-FOOTER_SIZE:])
    _, _, pos = tf_checkpoint._block_handle(footer)
    offset, size, _ = tf_checkpoint._block_handle(footer, pos)  # the index block
    raw[offset + size] = 1
    crc = mask_crc(crc32c(bytes(raw[offset : offset + size + 1])))
    raw[offset + size + 1 : offset + size + 5] = struct.pack("<I", crc)
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="snappy-compressed block"):
        list_tf_checkpoint(ckpt_copy)


def test_missing_checkpoint_names_the_index(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no index file .*model\.ckpt-1\.index"):
        read_tf_checkpoint(tmp_path / "model.ckpt-1")


def test_not_an_sstable(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(os.urandom(200))
    with pytest.raises(ModelError, match=r"x\.index is not valid"):
        read_tf_checkpoint(tmp_path / "x")


def test_string_and_partitioned_variables_are_named(tf_checkpoints: dict[str, TFWritten]) -> None:
    prefix = tf_checkpoints["odd"].prefix
    listed = list_tf_checkpoint(prefix)
    assert sorted(listed) == ["kept", "split/kernel", "words"]  # slice entries not listed
    assert listed["split/kernel"].sliced and listed["split/kernel"].shape == (4, 3)
    with pytest.raises(ModelError, match=r"words .*has dtype string"):
        read_tf_checkpoint(prefix, select=lambda name: name == "words")
    with pytest.raises(ModelError, match=r"split/kernel .*partitioned"):
        read_tf_checkpoint(prefix)
    got = read_tf_checkpoint(prefix, select=lambda name: name == "kept")
    np.testing.assert_array_equal(got["kept"], np.arange(3, dtype=np.int32))
