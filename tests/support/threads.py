"""One CPU thread for a test module's small tensors.

On a busy 2-core machine two spinning threads make a tiny convolution many times slower,
and a fixed thread count keeps float reductions in one order, so repeated runs in a module
are bitwise equal. Import :func:`one_thread` into a test module (it is autouse)."""

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
