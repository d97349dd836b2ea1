"""Fixtures for every test."""

import os

import pytest

from tests.support import requirements, tls
from tests.support.loops import closed_loop_for_sync_tests  # noqa: F401  (autouse)

tls.share_default_context()  # tests/support/tls.py: one TLS context, not one per client
# the processes the tests start (gateways, upstreams, CLI commands: thousands) import gatehouse
# from this checkout, which pip's editable install does not compile: with PYTHONDONTWRITEBYTECODE
# set (some shells and CI images set it) each one compiled gatehouse's ~170 modules again,
# ~0.2-0.4 s of CPU on a 2-core VM. They write bytecode once and read it after (__pycache__ is
# in .gitignore). Only the test run and what it starts are affected
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_sessionstart(session: pytest.Session) -> None:
    gaps = requirements.missing()
    if gaps:
        pytest.exit("the tests need what is missing here:\n  - " + "\n  - ".join(gaps)
                    + "\n" + requirements.HOW, returncode=3)
