"""Usage history and limit overrides: recorded by the gateway, read and set by the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from gatehouse.app import create_app
from gatehouse.cli.main import app as cli
from gatehouse.config import load_settings
from gatehouse.identity.service import IdentityService

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "count me"}],
        "max_tokens": 10}
runner = CliRunner()


def run(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, [*args, "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def printed_key(output: str) -> str:
    """The key ``keys create`` printed (a note about the running gateway may follow)."""
    return next(line for line in output.splitlines() if line.startswith("gh-"))


async def serve(config: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    settings = load_settings(config)
    ids = IdentityService(settings)
    app = create_app(settings, identity=ids)
    await app.startup()
    out = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw") as client:
            for key, body in calls:
                out.append(await client.post("/v1/chat/completions", json=body,
                                             headers={"authorization": f"Bearer {key}"}))
    finally:
        await app.aclose()  # flushes the usage book
    return out


def test_usage_history_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.toml"
    config.write_text('[storage]\ndatabase_url = "sqlite+aiosqlite:///gh.db"\n'
                      '[identity]\nsecret_file = "secret"\n'
                      '[tiers.standard.limits]\nrequests_per_minute = 100\n')
    run(config, "orgs", "create", "acme")
    run(config, "projects", "create", "acme/bot")
    run(config, "projects", "create", "acme/web")
    bot = printed_key(run(config, "keys", "create", "acme/bot"))
    web = printed_key(run(config, "keys", "create", "acme/web"))

    replies = asyncio.run(serve(config, [(bot, CHAT)] * 3 + [(web, CHAT)] * 2))
    assert all(r.status_code == 200 for r in replies)
    tokens = sum(r.json()["usage"]["total_tokens"] for r in replies)

    report = run(config, "usage", "acme", "--by", "project,model", "--since", "1d")
    assert "bot" in report and "web" in report and "demo" in report
    lines = [line for line in report.splitlines() if "demo" in line]
    assert any(" 3 " in line for line in lines) and any(" 2 " in line for line in lines)
    assert f"{tokens:,}" in run(config, "usage", "acme", "--since", "1d")
    assert "--by 'nope'" in run(config, "usage", "acme", "--by", "nope", code=2)

    key_id = next(w for w in run(config, "keys", "list", "acme/bot").split()
                  if w.startswith("key_"))
    run(config, "limits", "set", "key", key_id, "requests_per_minute", "1")
    run(config, "limits", "set", "org", "acme", "tokens_per_day", "unlimited")
    listing = run(config, "limits", "list")
    assert "requests_per_minute" in listing and "unlimited" in listing
    assert "unknown limit" in run(config, "limits", "set", "org", "acme", "rpm", "5", code=1)
    assert "no org" in run(config, "limits", "set", "org", "nope", "tokens_per_day", "5",
                           code=1)

    statuses = [r.status_code for r in asyncio.run(serve(config, [(bot, CHAT)] * 2 +
                                                                 [(web, CHAT)] * 2))]
    assert statuses == [200, 429, 200, 200]  # the key's own limit; the other key the tier's
    run(config, "limits", "clear", "key", key_id)
    statuses = [r.status_code for r in asyncio.run(serve(config, [(bot, CHAT)] * 2))]
    assert statuses == [200, 200]
