"""Fixtures for every test."""

from tests.support.loops import closed_loop_for_sync_tests  # noqa: F401  (autouse)
