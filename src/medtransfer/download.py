"""The one place that fetches remote files: resumable, checksummed, atomic, offline-aware.

:func:`fetch` streams a URL into ``<dest>.part`` (resuming a partial file with an HTTP
``Range`` request), verifies its sha256 (in full, or the prefix that torchvision file names
carry, e.g. ``resnet18-f37072fd.pth``), records the digest in the sidecar ``<dest>.sha256``
and only then renames the part file to ``dest``. Nothing half-written ever sits at ``dest``.
A file already at ``dest`` is verified and returned without touching the network.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from medtransfer import __version__
from medtransfer.config import ENV_OFFLINE, is_offline
from medtransfer.errors import DownloadError
from medtransfer.fsutil import atomic_write_text, sha256_file

CHUNK_SIZE = 1 << 16
USER_AGENT = f"medtransfer/{__version__}"

# Errors after which a transfer is worth retrying (and resuming).
_TRANSIENT = (
    urllib.error.URLError,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine, ...
    ConnectionError,
    TimeoutError,
    OSError,
)


def sidecar_path(dest: Path) -> Path:
    """The file ``<dest>.sha256`` that records the full hex sha256 of ``dest``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def part_path(dest: Path) -> Path:
    """The file ``<dest>.part`` a download is streamed into before it is renamed to ``dest``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def recorded_sha256(dest: Path) -> str | None:
    """The sha256 recorded in ``<dest>.sha256`` (lower-case hex), or None when there is none."""
    side = sidecar_path(dest)
    try:
        text = side.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    digest = text.split()[0].lower() if text else ""
    return digest or None


def _record(dest: Path, digest: str) -> None:
    atomic_write_text(sidecar_path(dest), f"{digest}  {Path(dest).name}\n")


def _expected(sha256: str | None, sha256_prefix: str | None) -> str | None:
    """The hash to check against (full wins over prefix), lower-cased."""
    if sha256:
        return sha256.strip().lower()
    if sha256_prefix:
        return sha256_prefix.strip().lower()
    return None


def _matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected) if len(expected) < len(actual) else actual == expected


def _verify_existing(dest: Path, sha256: str | None, sha256_prefix: str | None) -> Path:
    """Check a file already at ``dest`` and (re)write its sidecar; no network."""
    actual = sha256_file(dest)
    expected = _expected(sha256, sha256_prefix)
    source = "the expected checksum"
    if expected is None:
        expected = recorded_sha256(dest)
        source = f"the checksum recorded in {sidecar_path(dest)}"
    if expected is not None and not _matches(actual, expected):
        raise DownloadError(
            f"The file {dest} does not match {source}: expected sha256 {expected}, got {actual}. "
            f"It is corrupt or not the right file. Delete it (and {sidecar_path(dest)}) and run "
            "again to download it afresh, or put the right file there by hand."
        )
    if recorded_sha256(dest) != actual:
        _record(dest, actual)
    return dest


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _transfer_once(url: str, part: Path, *, progress: bool, timeout: float, label: str) -> None:
    """One attempt: stream ``url`` into ``part``, resuming from its current size.

    Raises a transient error (see ``_TRANSIENT``) when the transfer breaks off; the bytes
    received so far stay in ``part`` for the next attempt to resume from.
    """
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start > 0:
            # Range not satisfiable: the part file is as long as (or longer than) the remote
            # file, or stale. Start again from zero.
            part.unlink(missing_ok=True)
            response = _open(url, 0, timeout)
            start = 0
        else:
            raise
    with response:
        if start > 0 and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.replace(" ", "").startswith(f"bytes{start}-"):
                # A range other than the one asked for: start the next attempt from zero.
                part.unlink(missing_ok=True)
                raise http.client.HTTPException(
                    f"server answered Range bytes={start}- with Content-Range {content_range!r}"
                )
            mode = "ab"
        else:  # 200: the server ignored the Range header (or we asked for none)
            mode = "wb"
            start = 0
        remaining = _content_length(response)
        total = start + remaining if remaining is not None else None
        received = 0
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                chunk = response.read(CHUNK_SIZE)
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        if remaining is not None and received < remaining:
            raise http.client.IncompleteRead(b"", remaining - received)


def _is_permanent(err: BaseException) -> bool:
    """HTTP client errors (404, 403, ...) will not go away by retrying."""
    return (
        isinstance(err, urllib.error.HTTPError)
        and 400 <= err.code < 500
        and err.code
        not in {
            408,
            429,
        }
    )


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"{type(err).__name__}: {err.reason}"
    return f"{type(err).__name__}: {err}"


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
    retry_delay: float = 1.0,
) -> Path:
    """Return ``dest``, downloading ``url`` into it first if it is not there yet.

    Args:
        url: the remote file.
        dest: where the file lives locally; its parent folder is created.
        sha256: the full hex sha256 the file must have.
        sha256_prefix: the leading hex characters of its sha256 (used when ``sha256`` is None).
        progress: show a tqdm progress bar on stderr.
        timeout: socket timeout in seconds for each request.
        retries: how many times a broken or failed transfer is retried (each resumes).
        retry_delay: seconds to wait before the first retry; doubled for each later one.

    Raises:
        DownloadError: the file at ``dest`` fails its checksum; offline mode is on and the file
            is missing; the transfer failed after all retries; or the downloaded bytes fail
            the checksum. Every message names the URL or file and how to fix it.
    """
    dest = Path(dest)
    if dest.exists():
        return _verify_existing(dest, sha256, sha256_prefix)

    expected = _expected(sha256, sha256_prefix)
    if is_offline():
        hint = f" Its sha256 must start with {expected}." if expected else ""
        raise DownloadError(
            f"{dest} is missing and offline mode is on ({ENV_OFFLINE}=1), so {url} is not "
            f"downloaded. Fetch that URL by hand and save it as {dest}, or unset "
            f"{ENV_OFFLINE}.{hint}"
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    attempts = max(0, retries) + 1
    last_error: BaseException | None = None
    made = 0
    for attempt in range(attempts):
        made = attempt + 1
        if attempt > 0 and retry_delay > 0:
            time.sleep(retry_delay * 2 ** (attempt - 1))
        try:
            _transfer_once(url, part, progress=progress, timeout=timeout, label=dest.name)
        except _TRANSIENT as err:
            last_error = err
            if _is_permanent(err):
                break
            continue
        last_error = None
        break

    if last_error is not None:
        tried = "once" if made == 1 else f"{made} times"
        raise DownloadError(
            f"Could not download {url} ({_describe(last_error)}; tried {tried}). Check the "
            f"network and the URL, or fetch the file by hand and save it as {dest}."
        ) from last_error

    actual = sha256_file(part)
    if expected is not None and not _matches(actual, expected):
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise DownloadError(
            f"The file downloaded from {url} failed its checksum: expected sha256 {expected}, "
            f"got {actual}. The download was deleted. The server may be serving a different "
            f"file; fetch the right one by hand and save it as {dest}."
        )
    _record(dest, actual)
    os.replace(part, dest)
    return dest
