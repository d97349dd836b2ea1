"""The cluster tests reuse the end-to-end fixtures (real processes, SDK clients closed)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import _close_sdk_clients, proc_dir  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
