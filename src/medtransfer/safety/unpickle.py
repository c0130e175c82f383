"""Unpickle downloaded files without running anything they name.

``pickle.load`` calls whatever global a file names (``os.system``, ``builtins.eval``, ...).
:func:`restricted_load` resolves only the globals of an allow-list and raises
:class:`RefusedPickle` for any other before it is called. Numpy arrays are never handed to
numpy's own unpickling code: :data:`NUMPY_GLOBALS` maps numpy's globals to stand-ins that
check the dtype and shape and build the array with ``np.frombuffer``; plain numeric dtypes
only (bool, int, uint, float), so no object array can smuggle a call in.

Readers add their own stand-ins to :data:`NUMPY_GLOBALS` (e.g. the BYOL converter's haiku
mappings) and turn :class:`RefusedPickle` into an error that says how to get a genuine file.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

_PLAIN_DTYPE_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: no objects, no records


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a global, or holds a value, outside the allow-list; nothing of it ran."""


class _DtypeStub:
    """Stands in for ``numpy.dtype(spec, align, copy)`` while a file is unpickled."""

    def __init__(self, spec: Any = None, *_: Any) -> None:
        self.spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1:
            order = state[1]
            self.byteorder = order.decode("latin1") if isinstance(order, bytes) else str(order)
            if any(part is not None for part in state[2:5]):
                raise RefusedPickle("refusing a structured or sub-array dtype")

    def resolve(self) -> np.dtype:
        """The plain numeric dtype described; anything else is refused."""
        if not isinstance(self.spec, str) or self.byteorder not in ("<", ">", "|", "="):
            raise RefusedPickle(f"refusing dtype {self.spec!r}")
        try:
            dtype = np.dtype(self.spec)
        except TypeError as exc:
            raise RefusedPickle(f"refusing dtype {self.spec!r}") from exc
        if dtype.kind not in _PLAIN_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise RefusedPickle(f"refusing non-numeric dtype {self.spec!r}")
        if self.byteorder in ("<", ">") and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


class _ArrayStub:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, ...)``.

    Its ``__setstate__`` receives numpy's pickled state ``(version, shape, dtype, fortran,
    raw bytes)`` and builds the array with ``np.frombuffer``: numpy's own unpickling code
    never sees the file's bytes. :func:`restricted_load` swaps the stub for its array.
    """

    def __init__(self, cls: Any = None, *_: Any) -> None:
        if cls is not np.ndarray:
            raise RefusedPickle(f"refusing to reconstruct {cls!r}, not numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise RefusedPickle("unexpected numpy array state")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise RefusedPickle("numpy array state without a plain dtype")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise RefusedPickle(f"unexpected numpy array shape {shape!r}")
        resolved = dtype.resolve()
        raw = _as_bytes(raw, "numpy array data")
        count = int(np.prod(shape, dtype=np.int64))
        if len(raw) != count * resolved.itemsize:
            raise RefusedPickle(
                f"numpy array data holds {len(raw)} bytes, shape {shape} needs "
                f"{count * resolved.itemsize}"
            )
        flat = np.frombuffer(raw, dtype=resolved, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy()


def _as_bytes(raw: Any, what: str) -> bytes:
    """``raw`` as bytes; a Python 2 ``str`` read with ``encoding="latin1"`` is re-encoded."""
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes | bytearray):
        raise RefusedPickle(f"{what} is not a byte string")
    return bytes(raw)


def _scalar(dtype: Any = None, data: Any = None) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: one numeric value."""
    if not isinstance(dtype, _DtypeStub):
        raise RefusedPickle("a numpy scalar without a plain dtype")
    resolved = dtype.resolve()
    raw = _as_bytes(data, "numpy scalar data")
    if len(raw) != resolved.itemsize:
        raise RefusedPickle(
            f"numpy scalar data holds {len(raw)} bytes, {resolved} needs {resolved.itemsize}"
        )
    return np.frombuffer(raw, dtype=resolved, count=1)[0]


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode(text, "latin1")``, how Python 3 pickles ``bytes`` at protocol 2."""
    if (
        not isinstance(text, str)
        or str(encoding).lower() not in ("latin1", "latin-1")
        or errors != "strict"
    ):
        raise RefusedPickle(f"refusing _codecs.encode(..., {encoding!r}) other than latin1 text")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``, how Python 3 pickles ``b""`` at protocol 2; any argument is refused."""
    if args:
        raise RefusedPickle("refusing bytes() with arguments")
    return b""


# (module, name) -> what it resolves to. Python 2 / numpy 1.x files name
# numpy.core.multiarray; numpy 2 writes numpy._core.multiarray; Python 3 at protocol 2
# spells bytes as _codecs.encode(..., "latin1") and b"" as __builtin__.bytes().
NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _DtypeStub,
    ("numpy.core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only the globals in ``allowed``.

    Any other global, and any persistent id, raises :class:`RefusedPickle` naming it
    before anything is called.
    """

    def __init__(
        self, file: IO[bytes], allowed: Mapping[tuple[str, str], Any], *, encoding: str
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        target = self._allowed.get((module, name))
        if target is None:
            raise RefusedPickle(
                f"refusing to load the global {module}.{name}: it is not on the allow-list, "
                "so nothing was run"
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refusing a pickle persistent id: the allow-list has none")


def restricted_load(
    file: IO[bytes],
    allowed: Mapping[tuple[str, str], Any] = NUMPY_GLOBALS,
    *,
    encoding: str = "ASCII",
) -> Any:
    """Unpickle ``file`` resolving only ``allowed``; numpy arrays come back as ``np.ndarray``.

    ``encoding``: how Python 2 byte strings are decoded (``"latin1"`` for Python 2 files).
    Dict keys that arrive as ``bytes`` are decoded as latin-1.

    Raises:
        RefusedPickle: a global, persistent id, dtype or value outside the allow-list.
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError: a
            truncated or malformed stream.
    """
    return _restore(RestrictedUnpickler(file, allowed, encoding=encoding).load(), {})


def _restore(value: Any, memo: dict[int, Any]) -> Any:
    """``value`` with array and dtype stand-ins replaced; shared and cyclic parts kept so."""
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise RefusedPickle("numpy array without data")
        return value.array
    if isinstance(value, _DtypeStub):
        return value.resolve()
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        restored: dict[Any, Any] = {}
        memo[id(value)] = restored
        for key, item in value.items():
            restored[key.decode("latin1") if isinstance(key, bytes) else key] = _restore(item, memo)
        return restored
    if isinstance(value, list):
        items: list[Any] = []
        memo[id(value)] = items
        items.extend(_restore(item, memo) for item in value)
        return items
    if isinstance(value, tuple):
        parts = [_restore(item, memo) for item in value]
        rebuilt = type(value)._make(parts) if hasattr(type(value), "_fields") else tuple(parts)
        memo[id(value)] = rebuilt
        return rebuilt
    return value
