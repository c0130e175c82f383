"""medtransfer.download.fetch against a local HTTP server (never the network)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medtransfer.download import fetch, part_path, recorded_sha256, sidecar_path
from medtransfer.errors import DownloadError, MedTransferError
from tests.support.http_server import FileServer, serve_directory

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"blob-{DIGEST[:8]}.bin"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    served = tmp_path / "served"
    served.mkdir()
    (served / NAME).write_bytes(PAYLOAD)
    with serve_directory(served) as running:
        yield running


def _fetch(server: FileServer, dest: Path, **kwargs: object) -> Path:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("retry_delay", 0.0)
    kwargs.setdefault("timeout", 10.0)
    return fetch(server.url(NAME), dest, **kwargs)  # type: ignore[arg-type]


def test_full_download_writes_file_and_sidecar(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / NAME
    assert _fetch(server, dest, sha256=DIGEST) == dest
    assert dest.read_bytes() == PAYLOAD
    assert recorded_sha256(dest) == DIGEST
    assert not part_path(dest).exists()
    assert [r.range for r in server.requests_for(NAME)] == [None]


def test_sidecar_is_recorded_without_a_known_hash(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    _fetch(server, dest)
    assert recorded_sha256(dest) == DIGEST


def test_broken_transfer_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    server.set_fault(NAME, drop_after=100_000, times=2)
    dest = tmp_path / NAME
    _fetch(server, dest, sha256=DIGEST, retries=3)
    assert dest.read_bytes() == PAYLOAD
    seen = server.requests_for(NAME)
    assert [r.range for r in seen] == [None, "bytes=100000-", "bytes=200000-"]
    assert [r.status for r in seen] == [200, 206, 206]


def test_leftover_part_file_is_resumed(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD[:1234])
    _fetch(server, dest, sha256_prefix=DIGEST[:8])
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests_for(NAME)] == ["bytes=1234-"]


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(b"garbage that must not be kept")
    server.set_fault(NAME, ignore_range=True)
    _fetch(server, dest, sha256=DIGEST)
    assert dest.read_bytes() == PAYLOAD
    seen = server.requests_for(NAME)
    assert seen[0].range is not None and seen[0].status == 200


def test_too_many_breaks_give_up_and_keep_the_part(server: FileServer, tmp_path: Path) -> None:
    server.set_fault(NAME, drop_after=1000)
    dest = tmp_path / NAME
    with pytest.raises(DownloadError) as info:
        _fetch(server, dest, retries=2)
    assert server.url(NAME) in str(info.value) and str(dest) in str(info.value)
    assert len(server.requests_for(NAME)) == 3
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 3000  # kept, so a later run resumes


def test_wrong_checksum_deletes_part_and_names_url(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        _fetch(server, dest, sha256=wrong)
    message = str(info.value)
    assert server.url(NAME) in message and wrong in message and DIGEST in message
    assert not dest.exists()
    assert not part_path(dest).exists()
    assert not sidecar_path(dest).exists()


def test_prefix_checksum(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    _fetch(server, dest, sha256_prefix=DIGEST[:8].upper())
    assert recorded_sha256(dest) == DIGEST
    with pytest.raises(DownloadError, match="deadbeef"):
        _fetch(server, tmp_path / "other.bin", sha256_prefix="deadbeef")


def test_offline_names_url_and_dest_and_sends_nothing(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    dest = tmp_path / "weights" / NAME
    with pytest.raises(DownloadError) as info:
        _fetch(server, dest)
    assert isinstance(info.value, MedTransferError)
    assert server.url(NAME) in str(info.value) and str(dest) in str(info.value)
    assert server.requests == []


def test_existing_file_is_verified_without_network(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / NAME
    dest.write_bytes(PAYLOAD)
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    assert _fetch(server, dest, sha256_prefix=DIGEST[:8]) == dest
    assert recorded_sha256(dest) == DIGEST  # recorded on first sight
    assert _fetch(server, dest) == dest  # checked against the sidecar
    assert server.requests == []


def test_existing_file_failing_its_checksum_is_an_error(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.write_bytes(PAYLOAD)
    _fetch(server, dest)  # records the sidecar
    dest.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(DownloadError) as info:
        _fetch(server, dest)
    message = str(info.value)
    assert str(dest) in message and DIGEST in message and "Delete" in message
    with pytest.raises(DownloadError, match=str(dest)):
        _fetch(server, dest, sha256=DIGEST)
    assert server.requests == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_name_the_url(server: FileServer, tmp_path: Path, status: int) -> None:
    server.set_fault(NAME, status=status)
    dest = tmp_path / NAME
    with pytest.raises(DownloadError) as info:
        _fetch(server, dest, retries=2)
    message = str(info.value)
    assert server.url(NAME) in message and str(status) in message and str(dest) in message
    assert not dest.exists()
    # A 404 is not retried; a 500 is.
    assert len(server.requests_for(NAME)) == (1 if status == 404 else 3)


def test_missing_remote_file_is_404(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        fetch(server.url("nope.bin"), tmp_path / "nope.bin", progress=False, retry_delay=0)


def test_unreachable_host_is_a_download_error(tmp_path: Path) -> None:
    with serve_directory(tmp_path) as stopped:
        url = stopped.url("x.bin")
    with pytest.raises(DownloadError, match=r"x\.bin"):
        fetch(url, tmp_path / "x.bin", progress=False, retries=0, timeout=2)


# --- recovery paths: each test fails when the code it names is deleted -----------------


def test_content_range_other_than_asked_restarts_from_zero(
    server: FileServer, tmp_path: Path
) -> None:
    """A 206 whose Content-Range does not start where the part file ends must not be
    appended (the file would be corrupt): the part is dropped and the next attempt starts
    from zero."""
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD[:1234])
    server.set_fault(NAME, range_from=0, times=1)
    _fetch(server, dest, retries=1)  # no checksum given: only the check guards the bytes
    assert dest.read_bytes() == PAYLOAD
    seen = server.requests_for(NAME)
    assert [(r.range, r.status) for r in seen] == [("bytes=1234-", 206), (None, 200)]


def test_content_range_mismatch_without_retries_names_it_and_drops_the_part(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD[:1234])
    server.set_fault(NAME, range_from=1000)
    with pytest.raises(DownloadError, match=r"bytes=1234- with Content-Range 'bytes 1000-"):
        _fetch(server, dest, retries=0)
    assert not part_path(dest).exists() and not dest.exists()


def test_range_not_satisfiable_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    """HTTP 416: the part file is as long as the remote file or longer (stale)."""
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD + b"left over from another file")
    _fetch(server, dest, sha256=DIGEST, retries=0)
    assert dest.read_bytes() == PAYLOAD
    seen = server.requests_for(NAME)
    assert [(r.range, r.status) for r in seen] == [
        (f"bytes={len(PAYLOAD) + 27}-", 416),
        (None, 200),
    ]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the downloader asks for, recorded instead of slept."""
    from medtransfer import download

    waited: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waited.append)
    return waited


def test_retries_back_off_doubling_the_delay(
    server: FileServer, tmp_path: Path, sleeps: list[float]
) -> None:
    server.set_fault(NAME, drop_after=50_000, times=3)
    dest = tmp_path / NAME
    _fetch(server, dest, sha256=DIGEST, retries=3, retry_delay=0.25)
    assert dest.read_bytes() == PAYLOAD
    assert sleeps == [0.25, 0.5, 1.0]
    assert len(server.requests_for(NAME)) == 4


def test_server_errors_are_retried_after_the_delay_but_client_errors_are_not(
    server: FileServer, tmp_path: Path, sleeps: list[float]
) -> None:
    server.set_fault(NAME, status=503, times=2)
    _fetch(server, tmp_path / "a" / NAME, retries=2, retry_delay=1.0)
    assert sleeps == [1.0, 2.0]
    sleeps.clear()
    server.set_fault(NAME, status=403)
    with pytest.raises(DownloadError, match=r"HTTP 403 Forbidden; tried once\)"):
        _fetch(server, tmp_path / "b" / NAME, retries=3, retry_delay=1.0)
    assert sleeps == []  # a permanent error is given up at once
    assert [r.status for r in server.requests_for(NAME)][-1:] == [403]
    assert len([r for r in server.requests_for(NAME) if r.status == 403]) == 1
