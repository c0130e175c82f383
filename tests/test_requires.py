"""A missing test dependency skips a test locally (named in the summary) and fails it in CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.requires import in_ci, requires

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_ci_is_recognised(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    monkeypatch.setenv("CI", "false")
    assert not in_ci()


def test_an_installed_module_lets_the_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    requires("json", "is the standard library")  # returns: nothing to skip or fail


def test_missing_module_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no_such_module_4711 is not installed"):
        requires("no_such_module_4711", "writes fixtures")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true and a test dependency is missing"):
        requires("no_such_module_4711", "writes fixtures")


def test_the_summary_names_each_skip_and_ends_with_the_counts(tmp_path: Path) -> None:
    """Run pytest as ``make test`` does (the project's addopts) on a two-test file."""
    (tmp_path / "test_two.py").write_text(
        textwrap.dedent(
            """
            from tests.support.requires import requires

            def test_runs():
                pass

            def test_needs_something():
                requires("no_such_module_4711", "writes fixtures")
            """
        )
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)]
    command += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    local = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert local.returncode == 0, local.stdout
    assert "SKIPPED [1]" in local.stdout and "no_such_module_4711 is not installed" in local.stdout
    assert local.stdout.strip().splitlines()[-1].startswith("1 passed, 1 skipped")
    ci = subprocess.run(
        command, capture_output=True, text=True, env={**env, "CI": "true"}, cwd=ROOT
    )
    assert ci.returncode == 1
    assert ci.stdout.strip().splitlines()[-1].startswith("1 failed, 1 passed")
