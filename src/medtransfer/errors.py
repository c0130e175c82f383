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
    """An image file that cannot be decoded (missing, truncated, unsupported)."""


class ModelError(MedTransferError):
    """A model that is unknown or whose weights do not fit its architecture."""


class DownloadError(MedTransferError):
    """A remote file that could not be fetched or failed its checksum."""


class ProtocolError(MedTransferError):
    """Protocol parameters that cannot work with the data (e.g. too few images per class)."""
