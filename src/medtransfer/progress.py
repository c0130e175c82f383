"""Progress for people and for log files: the one helper every long loop reports through.

:func:`progress` shows a tqdm bar when the stream (stderr by default) is a terminal, and
plain lines when it is not (a file, a pipe, a Slurm log): one line every ``interval``
seconds (:data:`LINE_INTERVAL_S` by default) and one when the work ends or stops, each a
complete line with no carriage return, e.g.::

    features of shenzhencxr: 128/300 img (43%), 4.1 img/s, 31 s elapsed, ~42 s left
    features of shenzhencxr: done, 300 img in 73 s (4.1 img/s)

``enabled=False`` (the ``--no-progress`` flag) shows nothing. :func:`note` prints a
one-line message (a resumed store, a wait on another process) to the same stream.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: Seconds between two plain progress lines when the stream is not a terminal.
LINE_INTERVAL_S = 30.0


class Progress(Protocol):
    """What a progress display offers (a tqdm bar, :class:`LineProgress` or nothing)."""

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LineProgress:
    """Progress as plain lines on ``stream``: one every ``interval`` seconds, one at the end.

    ``total`` may be None (unknown); ``unit_scale`` shows counts as 1.2k / 3.4M (with
    ``unit_divisor`` 1024 for bytes: 1.2 MiB). ``clock`` is the time source (seconds).
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str,
        stream: IO[str],
        *,
        initial: float = 0,
        unit_scale: bool = False,
        unit_divisor: int = 1000,
        interval: float = LINE_INTERVAL_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream
        self.n = initial
        self.initial = initial
        self.unit_scale = unit_scale
        self.unit_divisor = unit_divisor
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        self.postfix = ""
        self.closed = False

    def _amount(self, value: float, *, per_second: bool = False) -> str:
        """``1,234 img`` (``1.23MiB`` with ``unit_scale``), or a rate (``/s``)."""
        suffix = "/s" if per_second else ""
        if not self.unit_scale:
            return (
                f"{value:,.1f} {self.unit}{suffix}" if per_second else f"{value:,.0f} {self.unit}"
            )
        text = tqdm.format_sizeof(value, divisor=self.unit_divisor)
        binary = self.unit_divisor == 1024 and text[-1:].isalpha()
        return f"{text}{'i' if binary else ''}{self.unit}{suffix}"

    def _rate(self, elapsed: float) -> float:
        return (self.n - self.initial) / elapsed if elapsed > 0 else 0.0

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self._rate(elapsed)
        done = self._amount(self.n)
        if self.total:
            percent = 100 * self.n / self.total
            total = self._amount(self.total)
            if not self.unit_scale:
                done = f"{self.n:,.0f}"
            shown = f"{done}/{total} ({percent:.0f}%)"
        else:
            shown = done
        parts = [shown, self._amount(rate, per_second=True), f"{_duration(elapsed)} elapsed"]
        if self.total and rate > 0:
            parts.append(f"~{_duration((self.total - self.n) / rate)} left")
        return f"{self.desc}: {', '.join(parts)}{self.postfix}"

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._write(self._line(now))

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        self.postfix = f" [{shown}]" if shown else ""

    def close(self, *, stopped: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = self.clock() - self.started
        if stopped:
            self._write(f"stopped: {self._line(self.started + elapsed)}")
            return
        rate = self._rate(elapsed)
        self._write(
            f"{self.desc}: done, {self._amount(self.n)} in {_duration(elapsed)} "
            f"({self._amount(rate, per_second=True)}){self.postfix}"
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(stopped=exc_type is not None)


class _Silent:
    """No display at all (``--no-progress``)."""

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a bar redraws in place there)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def progress(
    total: float | None,
    desc: str,
    unit: str = "it",
    *,
    enabled: bool = True,
    initial: float = 0,
    unit_scale: bool = False,
    unit_divisor: int = 1000,
    leave: bool = True,
    interval: float | None = None,
    stream: IO[str] | None = None,
) -> Progress:
    """A progress display for ``total`` units of work (use it as a context manager).

    A tqdm bar on ``stream`` (default: ``sys.stderr`` as it is at the call) when it is a
    terminal; otherwise a :class:`LineProgress` writing a line every ``interval`` seconds
    (default :data:`LINE_INTERVAL_S`) and one at the end; nothing when ``enabled`` is
    False. ``leave=False`` clears a finished bar (the final plain line is still written).
    """
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            unit_scale=unit_scale,
            unit_divisor=unit_divisor,
            leave=leave,
            file=stream,
        )
    return LineProgress(
        total,
        desc,
        unit,
        stream,
        initial=initial,
        unit_scale=unit_scale,
        unit_divisor=unit_divisor,
        interval=LINE_INTERVAL_S if interval is None else interval,
    )


def track(
    items: Iterable[T],
    total: int | None,
    desc: str,
    unit: str = "it",
    *,
    enabled: bool = True,
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Yield ``items`` while :func:`progress` counts them."""
    with progress(total, desc, unit, enabled=enabled, stream=stream) as bar:
        for item in items:
            yield item
            bar.update(1)


def note(message: str, *, stream: IO[str] | None = None) -> None:
    """Print a one-line message for the person or the log following a long run (stderr)."""
    stream = stream if stream is not None else sys.stderr
    stream.write(f"{message}\n")
    stream.flush()
