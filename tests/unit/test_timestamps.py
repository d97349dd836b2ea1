"""A stored time outside what datetime holds is shown as the nearest it can be, wherever
it is shown (status page, feeds, CLI tables), instead of raising."""

from __future__ import annotations

import pytest

from gatehouse.cli.accounts import when
from gatehouse.cli.common import _cell, _iso
from gatehouse.status.statuspage import iso
from gatehouse.timestamps import LATEST, minute, utc


@pytest.mark.parametrize(("at", "shown"), [
    (253_402_300_800, "9999-12-31 23:59 UTC"),  # a second past datetime's last
    (10.0 ** 30, "9999-12-31 23:59 UTC"),
    (-5, "1970-01-01 00:00 UTC"),
    (1_796_220_000, "2026-12-02 14:00 UTC"),
])
def test_any_stored_time_can_be_shown(at: float, shown: str) -> None:
    assert minute(at) == when(at) == _cell(at, True, "-").plain == shown
    assert utc(at).timestamp() == min(max(at, 0), LATEST)
    assert _iso(at) is not None and iso(at) is not None
