"""Read TensorFlow checkpoints (the "V2" tensor-bundle format) without TensorFlow.

A checkpoint ``PREFIX`` (e.g. ``model.ckpt-225206``) is a set of files:

* ``PREFIX.index``: an SSTable (TensorFlow's copy of the LevelDB table format). Its keys
  are the variable names, sorted; the empty key holds a ``BundleHeaderProto`` (number of
  data shards, endianness, format version) and every other value is a ``BundleEntryProto``
  (dtype, shape, shard id, byte offset, byte size, masked crc32c of the bytes).
* ``PREFIX.data-0000K-of-0000N``: the raw tensor bytes, row-major, in the byte order of the
  header (little-endian in practice), in TensorFlow's variable layout (conv kernels HWIO).

SSTable layout (``table_builder.cc`` / ``block_builder.cc`` / ``format.cc``): data blocks,
a metaindex block (empty: TensorFlow writes no filters), an index block whose values are
block handles (varint64 offset, varint64 size) of the data blocks, and a 48-byte footer:
metaindex handle, index handle, zero padding to 40 bytes, then the magic number
``0xdb4775248b80fb57`` as two little-endian uint32 (low word first). Each block is
followed by a 5-byte trailer: compression type (0 = none, 1 = snappy) and the masked
crc32c of the block bytes plus that type byte. A block holds entries
``varint32 shared, varint32 non_shared, varint32 value_length, key[shared:], value`` (keys
prefix-compressed against the previous key) followed by the restart offsets (uint32 each)
and their count (uint32). ``BundleWriter`` always writes uncompressed tables (since
TensorFlow 1.2: ``TableBuilderOptions`` / ``BundleWriter::Finish`` set
``kNoCompression``), so snappy-compressed blocks (TensorFlow 1.0/1.1) are refused.

Protobufs are decoded by hand (varint, fixed32/64 and length-delimited fields), so neither
TensorFlow nor protobuf is needed. crc32c (Castagnoli) is computed with numpy, many
chunks in parallel, and the chunk checksums are then combined (see :func:`crc32c`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medtransfer.errors import ModelError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_MASK_DELTA = 0xA282EAD8
_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_BUNDLE_VERSION = 1  # kTensorBundleVersion: the newest format version this reader knows

# TensorFlow DataType enum (types.proto) -> little-endian numpy dtype.
_NUMPY_DTYPES: dict[int, str] = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "i1",  # DT_INT8
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    17: "<u2",  # DT_UINT16
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}
_DTYPE_NAMES: dict[int, str] = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    18: "complex128",
    19: "float16",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
}


class _Corrupt(Exception):
    """Malformed bytes; turned into a ModelError that names the file."""


@dataclass(frozen=True)
class TensorEntry:
    """One variable of a checkpoint, as its ``BundleEntryProto`` describes it.

    Attributes:
        dtype: TensorFlow's DataType enum value (1 = float32, 9 = int64, ...).
        shape: the variable's shape (TensorFlow layout).
        shard_id: which ``.data-K-of-N`` file holds the bytes.
        offset: byte offset in that file.
        size: byte count.
        crc32c: TensorFlow's masked crc32c of the bytes (None when absent).
        sliced: the variable is partitioned (its bytes live under per-slice keys).
    """

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool

    @property
    def dtype_name(self) -> str:
        """The dtype as TensorFlow names it (``float32``), or ``dtype<N>`` if unknown."""
        return _DTYPE_NAMES.get(self.dtype, f"dtype<{self.dtype}>")


# --------------------------------------------------------------------------- crc32c


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


def _update_bytewise(state: int, data: bytes | memoryview) -> int:
    """Advance the raw crc register (no pre/post inversion) over ``data``, one byte at a time."""
    table = _TABLE
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


@functools.lru_cache(maxsize=8)
def _zero_shift_tables(length: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Tables of the linear map "advance the register over ``length`` zero bytes".

    ``shift(s) = T0[s & 255] ^ T1[(s >> 8) & 255] ^ T2[(s >> 16) & 255] ^ T3[s >> 24]``.
    """
    values = (
        np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
    ).reshape(-1)
    for _ in range(length):
        values = _TABLE_NP[values & 0xFF] ^ (values >> 8)
    rows = values.reshape(4, 256).tolist()
    return rows[0], rows[1], rows[2], rows[3]


def _update_vectorised(state: int, data: bytes | memoryview, chunk: int) -> int:
    """Advance the raw register over ``data`` using numpy.

    The register update is linear over GF(2): processing a chunk ``B`` of length ``L`` from
    state ``s`` gives ``shift_L(s) ^ f(0, B)``. So the ``f(0, B_j)`` of all equal-length
    chunks are computed together (one numpy step per byte position), then folded in order
    with the precomputed ``shift_L`` tables. Leading bytes that do not fill a chunk are
    processed bytewise first.
    """
    view = memoryview(data).cast("B")
    count = len(view) // chunk
    head = len(view) - count * chunk
    state = _update_bytewise(state, view[:head])
    # (chunk, count): row i holds byte i of every chunk, contiguous.
    columns = np.frombuffer(view, dtype=np.uint8, offset=head).reshape(count, chunk).T.copy()
    registers = np.zeros(count, dtype=np.uint32)
    for row in columns:
        low = (
            registers.view(np.uint8)[::4]
            if np.little_endian
            else (registers & 0xFF).astype(np.uint8)
        )
        registers = _TABLE_NP[low ^ row] ^ (registers >> 8)
    t0, t1, t2, t3 = _zero_shift_tables(chunk)
    for partial in registers.tolist():
        state = (
            t0[state & 0xFF]
            ^ t1[(state >> 8) & 0xFF]
            ^ t2[(state >> 16) & 0xFF]
            ^ t3[state >> 24]
            ^ partial
        )
    return state


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The CRC-32C (Castagnoli) of ``data``, continuing from the checksum ``crc``.

    Same semantics as TensorFlow's ``crc32c::Extend(crc, data, n)``; ``crc32c(b"123456789")``
    is ``0xE3069283``. Large inputs go through numpy at about 100 MB/s.
    """
    state = crc ^ 0xFFFFFFFF
    size = memoryview(data).nbytes
    if size < 4096:
        state = _update_bytewise(state, data)
    else:
        state = _update_vectorised(state, data, 256 if size < (1 << 20) else 1024)
    return state ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB's masked form of a crc32c, as stored in files."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Inverse of :func:`mask_crc`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints, protobuf


def _varint(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns ``(value, next_pos)``."""
    end = len(buf) if limit is None else limit
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt(f"bad varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` of a serialized protobuf message.

    Varints and fixed-width fields give ints; length-delimited fields give bytes.
    """
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64 field")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt("truncated length-delimited field")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32 field")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        if field == 0:
            raise _Corrupt("protobuf field number 0")
        yield field, wire, value


def _int_field(wire: int, value: int | bytes) -> int:
    if wire not in (0, 1, 5) or not isinstance(value, int):
        raise _Corrupt("expected an integer protobuf field")
    return value


def _bytes_field(wire: int, value: int | bytes) -> bytes:
    if wire != 2 or not isinstance(value, bytes):
        raise _Corrupt("expected a length-delimited protobuf field")
    return value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    """``TensorShapeProto``: repeated ``Dim dim = 2`` (``int64 size = 1``), ``unknown_rank = 3``."""
    dims: list[int] = []
    for field, wire, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for sub, sub_wire, sub_value in _proto_fields(_bytes_field(wire, value)):
                if sub == 1:
                    size = _signed64(_int_field(sub_wire, sub_value))
            if size < 0:
                raise _Corrupt(f"dimension of unknown size ({size})")
            dims.append(size)
        elif field == 3 and _int_field(wire, value):
            raise _Corrupt("shape of unknown rank")
    return tuple(dims)


def _parse_entry(buf: bytes) -> TensorEntry:
    """``BundleEntryProto``: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6, slices=7."""
    dtype = shard_id = offset = size = 0
    shape: tuple[int, ...] = ()
    crc: int | None = None
    sliced = False
    for field, wire, value in _proto_fields(buf):
        if field == 1:
            dtype = _int_field(wire, value)
        elif field == 2:
            shape = _parse_shape(_bytes_field(wire, value))
        elif field == 3:
            shard_id = _int_field(wire, value)
        elif field == 4:
            offset = _signed64(_int_field(wire, value))
        elif field == 5:
            size = _signed64(_int_field(wire, value))
        elif field == 6:
            crc = _int_field(wire, value)
        elif field == 7:
            sliced = True
    if offset < 0 or size < 0:
        raise _Corrupt("negative offset or size")
    return TensorEntry(dtype, shape, shard_id, offset, size, crc, sliced)


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool
    min_consumer: int


def _parse_header(buf: bytes) -> _Header:
    """``BundleHeaderProto``: num_shards=1, endianness=2 (0 little, 1 big), version=3."""
    num_shards, endianness, min_consumer = 0, 0, 0
    for field, wire, value in _proto_fields(buf):
        if field == 1:
            num_shards = _int_field(wire, value)
        elif field == 2:
            endianness = _int_field(wire, value)
        elif field == 3:  # VersionDef: producer=1, min_consumer=2, bad_consumers=3
            for sub, sub_wire, sub_value in _proto_fields(_bytes_field(wire, value)):
                if sub == 2:
                    min_consumer = _signed64(_int_field(sub_wire, sub_value))
    return _Header(num_shards, endianness == 1, min_consumer)


# --------------------------------------------------------------------------- SSTable


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    """The contents of the block at ``offset`` (checksum verified, uncompressed only)."""
    end = offset + size
    if offset < 0 or size < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise _Corrupt(f"block at byte {offset} (size {size}) runs past the end of the file")
    kind = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if crc32c(memoryview(data)[offset : end + 1]) != unmask_crc(stored):
        raise _Corrupt(f"checksum mismatch in the block at byte {offset}")
    if kind == 1:
        raise _Corrupt(
            "snappy-compressed block (written by TensorFlow 1.0/1.1); re-save the checkpoint "
            "with a newer TensorFlow"
        )
    if kind != 0:
        raise _Corrupt(f"unknown block compression type {kind}")
    return data[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of a block, undoing the prefix compression of the keys."""
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise _Corrupt(f"block with an impossible restart count {num_restarts}")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        non_shared, pos = _varint(block, pos, limit)
        value_length, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + non_shared + value_length > limit:
            raise _Corrupt(f"bad entry at byte {pos} of a block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """Decode a BlockHandle; returns ``(offset, size, next_pos)``."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of an SSTable, in key order."""
    if len(data) < FOOTER_SIZE:
        raise _Corrupt(f"file of {len(data)} bytes is shorter than the {FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    low, high = struct.unpack_from("<II", footer, FOOTER_SIZE - 8)
    if (high << 32) | low != TABLE_MAGIC:
        raise _Corrupt("bad magic number: not an SSTable")
    _, _, pos = _block_handle(footer)  # the metaindex: TensorFlow writes no filters
    index_offset, index_size, _ = _block_handle(footer, pos)
    previous: bytes | None = None
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        offset, size, _ = _block_handle(handle)
        for key, value in _block_entries(_read_block(data, offset, size)):
            if previous is not None and key <= previous:
                raise _Corrupt(f"keys out of order at {key!r}")
            previous = key
            yield key, value


# --------------------------------------------------------------------------- checkpoints


def checkpoint_prefix(path: Path) -> Path:
    """The prefix of the checkpoint ``path`` names: the prefix itself or its ``.index`` file."""
    path = Path(path).expanduser()
    return path.with_suffix("") if path.suffix == ".index" else path


def _index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """``PREFIX.data-0000K-of-0000N``."""
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def _corrupt_index(index: Path, detail: str) -> ModelError:
    return ModelError(
        f"The TensorFlow checkpoint index {index} is not valid ({detail}). It may be truncated "
        "or not a TensorFlow checkpoint; download or extract it again."
    )


def _read_index(prefix: Path) -> tuple[_Header, dict[str, TensorEntry]]:
    index = _index_path(prefix)
    if not index.is_file():
        raise ModelError(
            f"The TensorFlow checkpoint {prefix} has no index file {index}. Give the checkpoint "
            "prefix (e.g. .../model.ckpt-225206) or its .index file."
        )
    try:
        items = list(_table_items(index.read_bytes()))
        if not items or items[0][0] != b"":
            raise _Corrupt("no header entry")
        header = _parse_header(items[0][1])
        entries: dict[str, TensorEntry] = {}
        for key, value in items[1:]:
            if key.startswith(b"\x00"):
                continue  # one slice of a partitioned variable (OrderedCode-encoded name)
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError as decode_error:
                raise _Corrupt(f"key {key!r} is not UTF-8") from decode_error
            entries[name] = _parse_entry(value)
    except _Corrupt as err:
        raise _corrupt_index(index, str(err)) from err
    if header.num_shards < 1:
        raise _corrupt_index(index, f"header gives {header.num_shards} data shards")
    if header.min_consumer > _BUNDLE_VERSION:
        raise ModelError(
            f"The TensorFlow checkpoint {index} needs a reader of format version "
            f"{header.min_consumer}; this reader knows version {_BUNDLE_VERSION}."
        )
    if header.big_endian:
        raise ModelError(
            f"The TensorFlow checkpoint {index} was written on a big-endian machine, which is "
            "not supported. Re-save it on a little-endian machine."
        )
    return header, entries


def list_tf_checkpoint(prefix: Path) -> dict[str, TensorEntry]:
    """The variables of the checkpoint ``prefix`` (or its ``.index`` file), in key order.

    Like ``tf.train.list_variables``, without reading any tensor bytes. A partitioned
    variable is listed once, with ``sliced`` set; its per-slice entries are skipped.
    """
    return _read_index(checkpoint_prefix(prefix))[1]


def _read_tensor(
    name: str,
    entry: TensorEntry,
    handle_of: Callable[[int], tuple[Path, BinaryIO]],
    verify_crc: bool,
) -> np.ndarray:
    path, file = handle_of(entry.shard_id)
    file.seek(entry.offset)
    raw = file.read(entry.size)
    if len(raw) != entry.size:
        raise ModelError(
            f"The TensorFlow checkpoint data file {path} is truncated: {name} needs bytes "
            f"{entry.offset}..{entry.offset + entry.size}. Download or extract it again."
        )
    if verify_crc and entry.crc32c is not None and crc32c(raw) != unmask_crc(entry.crc32c):
        raise ModelError(
            f"The TensorFlow checkpoint data file {path} is corrupt: the checksum of {name} "
            "does not match its index entry. Download or extract it again."
        )
    dtype = np.dtype(_NUMPY_DTYPES[entry.dtype])
    return np.frombuffer(bytearray(raw), dtype=dtype).reshape(entry.shape)


def _check_readable(index: Path, name: str, entry: TensorEntry, num_shards: int) -> None:
    if entry.sliced:
        raise ModelError(
            f"The variable {name} in the TensorFlow checkpoint {index} is partitioned into "
            "slices, which this reader does not support."
        )
    if entry.dtype not in _NUMPY_DTYPES:
        raise ModelError(
            f"The variable {name} in the TensorFlow checkpoint {index} has dtype "
            f"{entry.dtype_name}, which this reader does not support (numeric dtypes only)."
        )
    expected = (
        int(np.prod(entry.shape, dtype=np.int64)) * np.dtype(_NUMPY_DTYPES[entry.dtype]).itemsize
    )
    if entry.size != expected:
        raise _corrupt_index(
            index, f"{name} has {entry.size} bytes but shape {list(entry.shape)} needs {expected}"
        )
    if not 0 <= entry.shard_id < num_shards:
        raise _corrupt_index(index, f"{name} is in shard {entry.shard_id} of {num_shards}")


def read_tf_checkpoint(
    prefix: Path, *, select: Callable[[str], bool] | None = None, verify_crc: bool = True
) -> dict[str, np.ndarray]:
    """Read the variables of a TensorFlow checkpoint into numpy arrays.

    Args:
        prefix: the checkpoint prefix (``.../model.ckpt-225206``) or its ``.index`` file.
        select: read only the variables whose name it accepts (default: all).
        verify_crc: check each tensor's bytes against the crc32c TensorFlow stored.

    Returns:
        ``{name: array}`` in key order, each array in TensorFlow's shape and layout (conv
        kernels ``(H, W, in, out)``), native byte order, writable.

    Raises:
        ModelError: a missing or malformed index or data file, a checksum mismatch, or a
            selected variable that is partitioned or of a non-numeric dtype (string, variant,
            resource, bfloat16, complex). Every message names the file.
    """
    prefix = checkpoint_prefix(prefix)
    header, entries = _read_index(prefix)
    index = _index_path(prefix)
    wanted = {k: e for k, e in entries.items() if select is None or select(k)}
    for name, entry in wanted.items():
        _check_readable(index, name, entry, header.num_shards)

    files: dict[int, tuple[Path, BinaryIO]] = {}

    def handle_of(shard: int) -> tuple[Path, BinaryIO]:
        if shard not in files:
            path = data_path(prefix, shard, header.num_shards)
            if not path.is_file():
                raise ModelError(
                    f"The TensorFlow checkpoint {index} needs the data file {path}, which is "
                    "missing. Keep the .index and every .data-* file of the checkpoint together."
                )
            files[shard] = (path, path.open("rb"))
        return files[shard]

    try:
        return {name: _read_tensor(name, e, handle_of, verify_crc) for name, e in wanted.items()}
    finally:
        for _, file in files.values():
            file.close()
