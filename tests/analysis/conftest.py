"""Analysis tests run on one CPU thread (see tests/support/threads.py)."""

from tests.support.threads import one_thread  # noqa: F401  (an autouse fixture)
