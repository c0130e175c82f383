"""A local HTTP file server for tests: ranges, fault injection and a log of requests.

Usage::

    from tests.support.http_server import serve_directory

    with serve_directory(folder) as server:
        server.set_fault("big.bin", drop_after=1000, times=1)   # break the first transfer
        fetch(server.url("big.bin"), dest)
        assert server.requests_for("big.bin")[1].range == "bytes=1000-"

The server listens on 127.0.0.1 on a free port, serves the files under ``folder`` (no
directory listings), answers ``Range: bytes=N-`` / ``bytes=N-M`` with 206 and
``Content-Range``, and can, per path, return an error status, ignore ``Range`` or drop the
connection after a number of body bytes, or answer a range other than the one asked for,
for the first ``times`` requests or always.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Fault:
    """What to do wrong for one path.

    Attributes:
        status: answer with this HTTP status (e.g. 404, 500) and no body.
        drop_after: send the headers for the whole body, then only this many body bytes,
            then close the connection.
        ignore_range: answer 200 with the whole file even when a Range was asked for.
        range_from: answer a Range request with 206 and the bytes from this offset instead
            (its ``Content-Range`` says so), as a misbehaving proxy might.
        times: apply the fault to this many requests only; None means to every request.
    """

    status: int | None = None
    drop_after: int | None = None
    ignore_range: bool = False
    range_from: int | None = None
    times: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request the server saw and how it answered."""

    path: str
    range: str | None
    status: int
    body_bytes: int


class FileServer:
    """A running server; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.faults: dict[str, Fault] = {}
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        """The URL of the file ``name`` (relative to the served folder)."""
        return f"{self.base_url}/{name.lstrip('/')}"

    def set_fault(
        self,
        name: str,
        *,
        status: int | None = None,
        drop_after: int | None = None,
        ignore_range: bool = False,
        range_from: int | None = None,
        times: int | None = None,
    ) -> None:
        """Make requests for ``name`` misbehave (see :class:`Fault`)."""
        with self._lock:
            fault = Fault(status, drop_after, ignore_range, range_from, times)
            self.faults[name.lstrip("/")] = fault

    def clear_faults(self) -> None:
        """Serve every path normally again."""
        with self._lock:
            self.faults.clear()

    def requests_for(self, name: str) -> list[RequestRecord]:
        """The requests seen for ``name``, in order."""
        name = name.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.path == name]

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(name)
            if fault is None:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:  # silence stderr
            return

        def do_GET(self) -> None:
            name = unquote(urlsplit(self.path).path).lstrip("/")
            range_header = self.headers.get("Range")
            fault = server._take_fault(name)
            file = (server.root / name).resolve()
            if fault is not None and fault.status is not None:
                self._status_only(name, range_header, fault.status)
                return
            if server.root not in file.parents or not file.is_file():
                self._status_only(name, range_header, 404)
                return
            data = file.read_bytes()
            size = len(data)
            status, start, end = 200, 0, size
            match = _RANGE.match(range_header or "")
            if match and not (fault is not None and fault.ignore_range):
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1, size) if match.group(2) else size
                if fault is not None and fault.range_from is not None:
                    start = fault.range_from
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    server._log(RequestRecord(name, range_header, 416, 0))
                    self.end_headers()
                    return
                status = 206
            body = data[start:end]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if fault is not None and fault.drop_after is not None:
                body = body[: fault.drop_after]
                self.close_connection = True
            # Log before the body goes out, so a client that has read it all sees the record.
            server._log(RequestRecord(name, range_header, status, len(body)))
            with contextlib.suppress(ConnectionError):
                self.wfile.write(body)
                self.wfile.flush()

        def _status_only(self, name: str, range_header: str | None, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            server._log(RequestRecord(name, range_header, status, 0))
            self.end_headers()

    return Handler


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[FileServer]:
    """Serve the files under ``root`` on 127.0.0.1 for the duration of the block."""
    server = FileServer(root).start()
    try:
        yield server
    finally:
        server.stop()
