"""User-facing errors.

Every error a user can cause (bad input, missing file, unknown name, no network) is a
:class:`MedTransferError`. Its message names the culprit (file, row, name) and says how
to fix it. The command line prints the message without a traceback and exits with code 2.
"""

from __future__ import annotations


class MedTransferError(Exception):
    """An error caused by input the user can fix; the message says what and how."""


class ConfigError(MedTransferError):
    """A bad flag, environment variable or root directory."""


class DatasetError(MedTransferError):
    """A dataset that is unknown, missing, or not in its published layout."""


class ImageDecodeError(DatasetError):
    """An image file that cannot be decoded (missing, truncated, unsupported).

    Built with :meth:`of`, it keeps its parts apart: ``path`` (the file or item), ``detail``
    (what is wrong) and ``fix`` (what to do), and reads ``"<path>: <detail>; <fix>"``. A
    report that names the file itself (``datasets check``) takes the parts, so neither the
    path nor the advice is said twice. Built from one message (as a DataLoader worker
    re-raises it), the parts are None.
    """

    path: str | None = None
    detail: str | None = None
    fix: str | None = None

    @classmethod
    def of(cls, path: object, detail: str, fix: str = "") -> ImageDecodeError:
        """The error about ``path``: ``detail`` (no path in it) and the ``fix`` (or "")."""
        error = cls(f"{path}: {detail}" + (f"; {fix}" if fix else ""))
        error.path, error.detail, error.fix = str(path), detail, fix
        return error


class ModelError(MedTransferError):
    """A model that is unknown or whose weights do not fit its architecture."""


class DownloadError(MedTransferError):
    """A remote file that could not be fetched or failed its checksum."""


class ProtocolError(MedTransferError):
    """Protocol parameters that cannot work with the data (e.g. too few images per class)."""


def without_path(text: str, path: object) -> str:
    """A library's message without the file name it repeats (``cannot identify image file
    '/a/b.png'``, ``... reader for "/a/b.mha"``), for an error that names the file once, in
    front; ``"(no message)"`` when nothing is left."""
    name = str(path)
    for quoted in (f"'{name}'", f'"{name}"', name):
        text = text.replace(f" {quoted}", "").replace(quoted, "")
    return text.strip() or "(no message)"
