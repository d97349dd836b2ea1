"""``gatehouse requests show`` in-process on a throwaway SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gatehouse.config import load_settings
from gatehouse.identity.service import IdentityService
from gatehouse.store.requests import RequestRows
from tests.unit.test_cli_accounts import config, run  # noqa: F401  (the fixture)
from tests.unit.test_request_log import record


def test_requests_show(config: Path) -> None:  # noqa: F811
    stored = record(7, client_request_id="my-call", status=503, error_class="unavailable",
                    error_type="server_error", error_code="upstream_unavailable",
                    error_cause="a: connect failed", attempts=["a:ConnectFailed", "b:503"],
                    backend=None, upstream_status=None)

    async def store_one() -> None:
        ids = IdentityService(load_settings(config))
        await ids.start(serve=False)
        await RequestRows(ids.store).add([stored])
        await ids.aclose()

    asyncio.run(store_one())
    out = run(config, "requests", "show", "my-call")
    for text in (stored.request_id, "503", "upstream_unavailable", "a:ConnectFailed, b:503",
                 "org_a", "a: connect failed"):
        assert text in out
    view = json.loads(run(config, "requests", "show", stored.request_id, "--json"))
    assert view["request_id"] == stored.request_id and view["attempts"] == ["a:ConnectFailed",
                                                                            "b:503"]
    assert view["error_class"] == "unavailable" and view["other_matches"] == []
    assert "no request" in run(config, "requests", "show", "req_nothing", code=1)
    assert "printable ASCII" in run(config, "requests", "show", "x" * 600, code=2)
