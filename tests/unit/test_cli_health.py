"""``gatehouse health`` in-process on a throwaway SQLite store of hand-made rollup rows: the
table per error class and per model, the sparklines, ``--json`` as the admin endpoint answers,
and its refusals."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from gatehouse.cli.health import spark
from gatehouse.config import load_settings
from gatehouse.identity.service import IdentityService
from gatehouse.store.rollups import RollupRows
from tests.unit.test_cli_accounts import config, run  # noqa: F401  (the fixture)
from tests.unit.test_health import as_tuple, row


def test_spark() -> None:
    assert spark([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    assert spark([None, 0.0, 0.5]) == " ▁█"
    assert spark([0, 0]) == "▁▁" and spark([]) == ""


def test_health_table_and_json(config: Path) -> None:  # noqa: F811
    minute = int(time.time() // 60)

    async def store_rows() -> None:
        ids = IdentityService(load_settings(config))
        await ids.start(serve=False)
        await ids.accounts.create_org("acme", "standard")
        await RollupRows(ids.store).add([as_tuple(r) for r in (
            row(minute, [100.0] * 40, model="gpt-x", tier="priority"),
            row(minute - 3, [900.0] * 10, model="gpt-x", tier="priority",
                error_class="unavailable"),
            row(minute, [5.0] * 7, model="other", tier="priority"),
            row(minute, [5.0] * 99, model="gpt-x", tier="standard"))])
        await ids.aclose()

    asyncio.run(store_rows())
    text = run(config, "health", "--model", "gpt-x", "--tier", "priority", "--window", "15m")
    for words in ("model=gpt-x, tier=priority", "requests", "50", "10 (20.00%)", "unavailable",
                  "by model", "within one", "█", "▁"):
        assert words in text, words
    assert "│ other" not in text and "│ 99 " not in text and "│ 57 " not in text
    view = json.loads(run(config, "health", "--tier", "priority", "--window", "1h", "--json"))
    assert view["requests"] == 57 and view["errors"] == 10
    assert [m["model"] for m in view["by_model"]] == ["gpt-x", "other"]
    assert len(view["series"]["points"]) == 60
    assert view["error_classes"]["unavailable"] == {"count": 10, "share": round(10 / 57, 6)}
    assert "5m, 15m" in run(config, "health", "--window", "2h", code=2)
    assert "No org `nobody`" in run(config, "health", "--org", "nobody", code=1)
