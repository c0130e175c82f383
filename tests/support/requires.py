"""Tests that need an optional test dependency: skipped locally, FAILED in CI.

``requires("tensorflow", "writes the reference TF checkpoints")`` at the top of a test (or
fixture) lets it run when the module is importable. When it is not, the test is skipped
with the reason (``pytest -rs``, on in ``pyproject.toml``, lists every skip and why in the
summary), except under ``CI=true`` (what CI services set), where a missing test dependency
fails the test: a green CI run means every test ran.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

INSTALL = "pip install -e '.[test]'"


def in_ci() -> bool:
    """Whether the suite runs in CI (``CI`` set to true, 1 or yes)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def requires(module: str, why: str) -> None:
    """Skip (locally) or fail (in CI) the calling test unless ``module`` can be imported.

    The module is looked up without importing it (importing TensorFlow into the test
    process breaks torch; see tests/models/convert/test_tf_checkpoint.py).
    """
    if importlib.util.find_spec(module) is not None:
        return
    message = f"{module} is not installed; it {why} ({INSTALL})"
    if in_ci():
        pytest.fail(f"CI=true and a test dependency is missing: {message}", pytrace=False)
    pytest.skip(message)
