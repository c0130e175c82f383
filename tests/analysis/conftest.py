"""Analysis tests run their small tensors on one CPU thread: on a busy 2-core machine two
spinning threads make a tiny convolution many times slower, and a fixed thread count keeps
float reductions in one order, so repeated runs are bitwise equal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
