import time

import pytest

from gatehouse.context import prefers_html
from gatehouse.errors import InvalidClientRequestId
from gatehouse.telemetry.ids import (
    check_client_request_id,
    new_request_id,
    request_id_time,
)


def test_request_ids_are_unique_sortable_and_carry_time() -> None:
    ids = []
    for _ in range(200):
        ids.append(new_request_id())
        if len(ids) % 50 == 0:
            time.sleep(0.002)
    assert len(set(ids)) == 200
    assert all(len(i) == 30 and i.startswith("req_") for i in ids)
    assert ids[0] < ids[-1] and sorted(ids[::50]) == ids[::50]
    assert abs(request_id_time(ids[-1]) - time.time()) < 5


def test_client_request_id_limits() -> None:
    assert check_client_request_id("a" * 512) == "a" * 512
    for bad in ("", "a" * 513, "tab\tinside", "caf\u00e9"):
        with pytest.raises(InvalidClientRequestId):
            check_client_request_id(bad)


@pytest.mark.parametrize("accept, html", [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
    ("application/json", False),
    ("*/*", False),
    ("", False),
    ("application/json, text/html", False),
    ("text/html;q=0.5, application/json", False),
    ("text/html", True),
])
def test_prefers_html(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html
