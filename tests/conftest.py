"""Fixtures for every test."""

import pytest

from tests.support import requirements, tls
from tests.support.loops import closed_loop_for_sync_tests  # noqa: F401  (autouse)

tls.share_default_context()  # tests/support/tls.py: one TLS context, not one per client


def pytest_sessionstart(session: pytest.Session) -> None:
    gaps = requirements.missing()
    if gaps:
        pytest.exit("the tests need what is missing here:\n  - " + "\n  - ".join(gaps)
                    + "\n" + requirements.HOW, returncode=3)
