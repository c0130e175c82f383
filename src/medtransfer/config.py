"""Roots (data, cache, results), offline mode, and the names of the compute precisions.

Each root is taken, in order, from its command-line flag, its environment variable, or a
default that does not depend on the current directory:

=========  ======================  ===================  ===========================================
root       flag                    environment          default
=======  =================  ===================  =========================================
data     ``--data-root``    MEDTRANSFER_DATA     ``~/medtransfer-data``
cache    ``--cache-dir``    MEDTRANSFER_CACHE    user cache dir (``~/.cache/medtransfer``)
results  ``--results-dir``  MEDTRANSFER_RESULTS  ``~/medtransfer-results``
=======  =================  ===================  =========================================

The data root is only ever read. The cache holds downloads, converted weights, manifests
and features, and is safe to delete. The results root holds records and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from medtransfer.errors import ConfigError

ENV_DATA = "MEDTRANSFER_DATA"
ENV_CACHE = "MEDTRANSFER_CACHE"
ENV_RESULTS = "MEDTRANSFER_RESULTS"
ENV_OFFLINE = "MEDTRANSFER_OFFLINE"
#: ``--precision`` values; :mod:`medtransfer.compute` says what each means.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Roots:
    """The three folders the toolkit works in, all absolute."""

    data: Path
    cache: Path
    results: Path

    def cache_sub(self, *parts: str) -> Path:
        """A folder under the cache root, created on demand."""
        path = self.cache.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _pick(flag: str | os.PathLike[str] | None, env: str, default: Path) -> Path:
    value = flag if flag not in (None, "") else os.environ.get(env) or None
    path = Path(value).expanduser() if value is not None else default
    return path.resolve()


def resolve_roots(
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] | None = None,
) -> Roots:
    """Resolve the roots from flags, then environment variables, then defaults."""
    home = Path.home()
    roots = Roots(
        data=_pick(data_root, ENV_DATA, home / "medtransfer-data"),
        cache=_pick(cache_dir, ENV_CACHE, Path(platformdirs.user_cache_dir("medtransfer"))),
        results=_pick(results_dir, ENV_RESULTS, home / "medtransfer-results"),
    )
    for name, flag, writable in (
        ("cache", "cache-dir", roots.cache),
        ("results", "results-dir", roots.results),
    ):
        if writable == roots.data or roots.data in writable.parents:
            raise ConfigError(
                f"The {name} root {writable} lies inside the data root {roots.data}; nothing may "
                f"be written into the data root. Point --{flag} somewhere else."
            )
    return roots


def is_offline() -> bool:
    """True when ``MEDTRANSFER_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}
