"""The restricted unpickler: numpy arrays and plain containers in, every other global out."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from medtransfer.safety.unpickle import NUMPY_GLOBALS, RefusedPickle, restricted_load
from tests.support.checkpoints import touch_payload


def _load(value: object, protocol: int = 2) -> object:
    return restricted_load(io.BytesIO(pickle.dumps(value, protocol=protocol)))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        np.arange(6, dtype=">i4"),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.array([True, False]),
        np.array(7, dtype=np.int32),
        np.zeros((0, 3), dtype=np.uint8),
    ],
    ids=["uint8", "float32", "big-endian", "fortran", "bool", "0-d", "empty"],
)
def test_arrays_come_back_equal_with_their_dtype(array: np.ndarray) -> None:
    loaded = _load({"x": array})["x"]
    assert isinstance(loaded, np.ndarray) and loaded.flags.writeable
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_containers_scalars_and_bytes_keys() -> None:
    value = {b"key": [1, "two", (3.0, None)], "scalar": np.float32(2.5), "empty": b""}
    loaded = _load(value)
    assert loaded["key"] == [1, "two", (3.0, None)]
    assert loaded["scalar"] == np.float32(2.5) and loaded["empty"] == b""


def test_shared_and_cyclic_parts_stay_shared() -> None:
    array = np.ones(3)
    cyclic: list[object] = [array, array]
    cyclic.append(cyclic)
    loaded = _load(cyclic)
    assert loaded[0] is loaded[1] and loaded[2] is loaded


def test_a_forbidden_global_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    stream = pickle.dumps({"data": touch_payload(marker)}, protocol=2)
    with pytest.raises(RefusedPickle, match=r"global (posix|os)\.system"):
        restricted_load(io.BytesIO(stream))
    assert not marker.exists()
    with pytest.raises(RefusedPickle, match=r"builtins\.eval"):
        restricted_load(io.BytesIO(b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R."))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([None, 1], dtype=object), "non-numeric dtype"),
        (np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), "structured"),
        (np.array(["text"]), "non-numeric dtype"),
    ],
    ids=["object", "structured", "unicode"],
)
def test_arrays_that_are_not_plain_numbers_are_refused(value: np.ndarray, message: str) -> None:
    with pytest.raises(RefusedPickle, match=message):
        _load({"data": value})


def test_persistent_ids_and_other_encodings_are_refused() -> None:
    class _Persistent(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return "outside" if obj == "ref" else None

    buffer = io.BytesIO()
    _Persistent(buffer, protocol=2).dump(["ref"])
    with pytest.raises(RefusedPickle, match="persistent id"):
        restricted_load(io.BytesIO(buffer.getvalue()))
    utf8 = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-8\x86R."
    with pytest.raises(RefusedPickle, match="latin1"):
        restricted_load(io.BytesIO(utf8))


def test_callers_extend_the_allow_list() -> None:
    stream = pickle.dumps(frozenset({1}), protocol=2)  # protocol 2 spells it __builtin__
    with pytest.raises(RefusedPickle, match=r"__builtin__\.frozenset"):
        restricted_load(io.BytesIO(stream))
    allowed = {**NUMPY_GLOBALS, ("__builtin__", "frozenset"): frozenset}
    assert restricted_load(io.BytesIO(stream), allowed) == frozenset({1})
