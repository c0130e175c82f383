"""A pickle writer that produces the bytes Python 2's cPickle wrote for the CIFAR batches.

The real batches are Python 2 pickles; synthetic ones written the same way
(:class:`Py2Pickle`) read exactly as a download does, including the numpy 1.x spelling of
arrays that :mod:`medtransfer.safety.unpickle` must accept.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


class Py2Pickle:
    """Writes pickles opcode by opcode the way Python 2's cPickle wrote the CIFAR batches.

    Protocol 2; ``str`` values become Python 2 byte strings (``SHORT_BINSTRING`` /
    ``BINSTRING``), so torchvision's ``pickle.load(f, encoding="latin1")`` reads ``str``
    keys and :func:`medtransfer.data.sources.cifar.unpickle_batch` reads them too; numpy
    arrays are spelled as numpy 1.x did (``numpy.core.multiarray._reconstruct``, dtype state
    version 3).
    """

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")  # PROTO 2

    def string(self, value: str | bytes) -> None:
        data = value.encode("latin1") if isinstance(value, str) else value
        if len(data) < 256:
            self.out.write(b"U" + bytes([len(data)]) + data)  # SHORT_BINSTRING
        else:
            self.out.write(b"T" + len(data).to_bytes(4, "little") + data)  # BINSTRING

    def integer(self, value: int) -> None:
        if 0 <= value < 256:
            self.out.write(b"K" + bytes([value]))  # BININT1
        elif 0 <= value < 65536:
            self.out.write(b"M" + value.to_bytes(2, "little"))  # BININT2
        else:
            self.out.write(b"J" + value.to_bytes(4, "little", signed=True))  # BININT

    def value(self, value: Any) -> None:
        if isinstance(value, bool):
            self.out.write(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, str | bytes):
            self.string(value)
        elif isinstance(value, list):
            self.out.write(b"]")  # EMPTY_LIST
            for start in range(0, len(value), 1000):  # cPickle batched APPENDS by 1000
                self.out.write(b"(")
                for item in value[start : start + 1000]:
                    self.value(item)
                self.out.write(b"e")
        elif isinstance(value, dict):
            self.out.write(b"}(")  # EMPTY_DICT, MARK
            for key, item in value.items():
                self.value(key)
                self.value(item)
            self.out.write(b"u")  # SETITEMS
        elif isinstance(value, np.ndarray):
            self.array(value)
        else:
            raise TypeError(f"cannot write {type(value).__name__} in a CIFAR batch")

    def array(self, array: np.ndarray) -> None:
        if array.dtype != np.uint8:
            raise TypeError("CIFAR batches hold uint8 arrays")
        array = np.ascontiguousarray(array)
        self.out.write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
        self.out.write(b"K\x00\x85")  # (0,)
        self.string("b")
        self.out.write(b"\x87R(")  # TUPLE3, REDUCE, MARK (array state)
        self.integer(1)
        for n in array.shape:
            self.integer(int(n))
        self.out.write({1: b"\x85", 2: b"\x86", 3: b"\x87"}[array.ndim])
        self.out.write(b"cnumpy\ndtype\n")
        self.string("u1")
        self.out.write(b"K\x00K\x01\x87R(K\x03")  # ('u1', 0, 1), REDUCE, MARK, version 3
        self.string("|")
        self.out.write(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # ..., -1, -1, 0
        self.out.write(b"\x89")  # not Fortran order
        self.string(array.tobytes())
        self.out.write(b"tb")  # TUPLE, BUILD

    def getvalue(self) -> bytes:
        return self.out.getvalue() + b"."  # STOP


def py2_pickle(value: dict[str, Any]) -> bytes:
    """``value`` as Python 2's cPickle (protocol 2) wrote it; see :class:`Py2Pickle`."""
    writer = Py2Pickle()
    writer.value(value)
    return writer.getvalue()
