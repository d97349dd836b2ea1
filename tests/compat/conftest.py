"""The compatibility suite: run by ``.ci/compat``, which prepares the servers' virtualenvs;
not part of ``python -m pytest`` (pyproject.toml's testpaths)."""

from tests.e2e.conftest import _close_sdk_clients  # noqa: F401  (autouse)
