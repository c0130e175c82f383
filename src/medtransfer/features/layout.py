"""The shard layout of a feature store, and how its shards are split into parts.

A store of ``n_rows`` rows is cut into shards of ``shard_rows`` consecutive rows (the last
one may be shorter): shard ``s`` holds rows ``[s * shard_rows, min((s + 1) * shard_rows,
n_rows))``. The layout is fixed when an extraction starts (it is recorded in the partial
store), so every process working on the store agrees on it.

Part ``i`` of ``N`` (1-based, as ``--part i/N``) is the contiguous run of shard indices
``[floor((i - 1) * S / N), floor(i * S / N))`` of the ``S`` shards: the ``N`` parts cover
every shard exactly once, in order; when ``N > S`` some parts are empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtransfer.errors import ConfigError


@dataclass(frozen=True)
class Part:
    """Part ``index`` (1-based) of ``count`` equal runs of a store's shards."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(
                f"part {self.index}/{self.count} does not exist: use I/N with 1 <= I <= N "
                "(e.g. --part 1/3, --part 2/3, --part 3/3)."
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_part(text: str, flag: str = "--part") -> Part:
    """``"2/3"`` -> ``Part(2, 3)``; a clear error naming ``flag`` otherwise."""
    index, slash, count = text.partition("/")
    try:
        if not slash:
            raise ValueError
        return Part(int(index), int(count))
    except ValueError:
        raise ConfigError(
            f"{flag} takes I/N (part I of N, counted from 1, e.g. 2/3), got {text!r}."
        ) from None


@dataclass(frozen=True)
class Layout:
    """``n_rows`` rows in shards of ``shard_rows`` rows."""

    n_rows: int
    shard_rows: int

    def __post_init__(self) -> None:
        if self.n_rows < 0 or self.shard_rows < 1:
            raise ValueError(f"invalid layout: {self.n_rows} rows, shards of {self.shard_rows}")

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def rows(self, shard: int) -> tuple[int, int]:
        """(start, stop) rows of ``shard``."""
        start = shard * self.shard_rows
        return start, min(start + self.shard_rows, self.n_rows)

    def shard_range(self, start: int, stop: int) -> range | None:
        """The shards that rows ``[start, stop)`` cover exactly, or None when the rows do
        not begin and end on shard boundaries of this layout."""
        if not 0 <= start < stop <= self.n_rows or start % self.shard_rows:
            return None
        if stop != self.n_rows and stop % self.shard_rows:
            return None
        return range(start // self.shard_rows, -(-stop // self.shard_rows))

    def part(self, part: Part) -> range:
        """The shard indices of ``part`` (module docstring)."""
        shards = self.n_shards
        return range((part.index - 1) * shards // part.count, part.index * shards // part.count)

    def shard_rows_of(self, shards: range | list[int]) -> int:
        """How many rows ``shards`` hold together."""
        return sum(self.rows(s)[1] - self.rows(s)[0] for s in shards)
