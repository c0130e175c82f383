"""The Python 2 pickle writer behind the synthetic CIFAR batches."""

from __future__ import annotations

import pickle

import numpy as np

from medtransfer.data.synth.py2_pickle import py2_pickle


def test_python2_writer_matches_what_plain_pickle_reads() -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    stream = py2_pickle({"labels": [1, 2], "data": data})
    assert stream.startswith(b"\x80\x02}(")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in stream
    # both ways torchvision-era code read the real files
    latin1 = pickle.loads(stream, encoding="latin1")
    as_bytes = pickle.loads(stream, encoding="bytes")
    np.testing.assert_array_equal(latin1["data"], data)
    np.testing.assert_array_equal(as_bytes[b"data"], data)
    assert latin1["labels"] == [1, 2]
