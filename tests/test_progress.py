"""Progress: a bar on a terminal, plain periodic lines in a log, nothing with --no-progress;
every long loop of the package reports through the one helper."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from tqdm import tqdm

import medtransfer
from medtransfer.cli import main
from medtransfer.progress import LineProgress, progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar() -> None:
    stream = Terminal()
    with progress(10, "work", "img", stream=stream) as bar:
        assert isinstance(bar, tqdm)
        bar.update(10)
    assert "\r" in stream.getvalue() and "10/10" in stream.getvalue()


def test_a_log_gets_plain_periodic_lines_without_carriage_returns() -> None:
    stream = io.StringIO()
    now = [0.0]
    with LineProgress(300, "features", "img", stream, interval=30, clock=lambda: now[0]) as bar:
        for _ in range(30):  # 10 images a second for 30 seconds
            now[0] += 1
            bar.update(10)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines == [
        "features: 300/300 img (100%), 10.0 img/s, 30 s elapsed, ~0 s left",
        "features: done, 300 img in 30 s (10.0 img/s)",
    ]


def test_lines_come_once_per_interval_and_say_how_far() -> None:
    stream = io.StringIO()
    now = [0.0]
    bar = LineProgress(100, "fine-tune", "step", stream, interval=30, clock=lambda: now[0])
    for step in range(100):
        now[0] = step + 1.0
        bar.update(1)
        if step == 40:
            bar.set_postfix({"loss": "0.123"})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # at 30, 60 and 90 s, then the end
    assert lines[0] == "fine-tune: 30/100 step (30%), 1.0 step/s, 30 s elapsed, ~1 min 10 s left"
    assert lines[1].endswith("[loss=0.123]") and lines[3].startswith("fine-tune: done, 100 step")


def test_an_interrupted_loop_says_where_it_stopped_and_bytes_read_as_bytes() -> None:
    stream = io.StringIO()
    with (
        pytest.raises(KeyboardInterrupt),
        progress(
            4 << 20, "weights.pt", "B", unit_scale=True, unit_divisor=1024, stream=stream
        ) as bar,
    ):
        bar.update(1 << 20)
        raise KeyboardInterrupt
    line = stream.getvalue().strip()
    assert line.startswith("stopped: weights.pt: 1.00MiB/4.00MiB (25%)")


def test_no_progress_shows_nothing_in_either_mode() -> None:
    for stream in (io.StringIO(), Terminal()):
        with progress(5, "quiet", stream=stream, enabled=False) as bar:
            bar.update(5)
        assert list(track(range(3), 3, "quiet", stream=stream, enabled=False)) == [0, 1, 2]
        assert stream.getvalue() == ""


def test_a_command_whose_stderr_is_a_file_logs_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["datasets", "synth", "-d", "shenzhencxr", "--out", str(tmp_path)]
    assert main([*args, "--per-class", "3", "--size", "16"]) == 0
    check = ["--data-root", str(tmp_path), "datasets", "check", "-d", "shenzhencxr"]
    main(check)
    err = capsys.readouterr().err
    assert "\r" not in err and re.search(r"checking images: done, 6 img in \d+ s", err)
    main([*check, "--no-progress"])
    assert capsys.readouterr().err == ""


def test_every_progress_display_goes_through_the_helper() -> None:
    package = Path(medtransfer.__file__).parent
    users = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"^\s*(from|import) tqdm", path.read_text(), re.MULTILINE)
    ]
    assert users == ["progress.py"]
