"""Shard layouts and their split into parts."""

from __future__ import annotations

import pytest

from medtransfer.errors import ConfigError
from medtransfer.features.layout import Layout, Part, parse_part


@pytest.mark.parametrize("n_rows", [0, 1, 7, 64, 300])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 50])
def test_parts_cover_every_shard_once_in_order(n_rows: int, count: int) -> None:
    layout = Layout(n_rows, 16)
    parts = [layout.part(Part(i, count)) for i in range(1, count + 1)]
    assert [s for part in parts for s in part] == list(range(layout.n_shards))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1  # as even as whole shards allow
    assert sum(layout.shard_rows_of(part) for part in parts) == n_rows


def test_rows_and_shard_boundaries() -> None:
    layout = Layout(10, 4)
    assert layout.n_shards == 3 and [layout.rows(s) for s in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert layout.shard_range(0, 8) == range(0, 2) and layout.shard_range(8, 10) == range(2, 3)
    assert layout.shard_range(0, 10) == range(0, 3)
    for start, stop in [(0, 3), (2, 8), (4, 4), (8, 11), (-4, 0)]:
        assert layout.shard_range(start, stop) is None


def test_part_flags_are_checked() -> None:
    assert parse_part("2/3") == Part(2, 3) and str(Part(2, 3)) == "2/3"
    for text in ["3", "0/3", "4/3", "a/b", "1/0", "-1/2"]:
        with pytest.raises(ConfigError, match="--part"):
            parse_part(text)
