"""Argument checks that the manifest alone decides, shared by the jobs: each job runs its
checks after the dataset is opened and before any model is loaded or image read."""

from __future__ import annotations

import numpy as np

from medtransfer.data.manifest import Manifest
from medtransfer.errors import ProtocolError


def require_classes(manifest: Manifest, rows: np.ndarray, what: str, where: str) -> None:
    """At least two classes among ``rows`` (n,): ``what`` needs them, ``where`` names the
    rows (e.g. ``the train split``)."""
    found = len(np.unique(manifest.labels[rows]))
    if found < 2:
        raise ProtocolError(
            f"{manifest.dataset}: {what} needs images of two classes or more; {where} has {found}."
        )


def require_test_rows(manifest: Manifest) -> None:
    """A non-empty test split."""
    if len(manifest.rows("test")) == 0:
        raise ProtocolError(f"{manifest.dataset}: the test split is empty.")
