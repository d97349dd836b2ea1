"""``gatehouse init | migrate``: a starter configuration, the store, the first admin key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gatehouse.cli.common import load_for_cli, store_errors
from gatehouse.cli.firstrun import first_keys
from gatehouse.cli.options import ConfigOpt
from gatehouse.identity.service import IdentityService, resolve_paths
from gatehouse.store.db import head_revision

err = Console(stderr=True)

STARTER = """\
# gatehouse.toml — written by `gatehouse init`. Every key: docs/configuration.md.

[server]
host = "127.0.0.1"
port = 8787

[storage]
database_url = "sqlite+aiosqlite:///gatehouse.db"   # or postgresql+asyncpg://user@host/db
state_url = "memory://"                              # redis://127.0.0.1:6379/0 for replicas

[identity]
require_key = true
secret_file = "gatehouse.secret"   # keys the stored key hashes: back it up, keep it private

# Limits per tier (docs/quotas.md); none are set until you write them:
# [tiers.standard.limits]
# requests_per_minute = 500
# tokens_per_minute = 200000
# tokens_per_month = 50000000
# [tiers.free.limits]
# response_tokens_per_hour = 4000
# tokens_per_day = 40000

# A real backend (vLLM, Ollama, llama.cpp server, OpenAI):
# [upstreams.local]
# base_url = "http://127.0.0.1:8000/v1"
# [models.llama]
# backends = ["local"]
"""


def init(config: Annotated[Path, typer.Option("--config", "-c", help="Where to write it.")]
         = Path("gatehouse.toml")) -> None:
    """Write a starter gatehouse.toml (if absent), create the store, print the first keys."""
    if config.exists():
        err.print(f"{config} exists; keeping it")
    else:
        config.write_text(STARTER, encoding="utf-8")
        err.print(f"wrote {config}")
    settings = load_for_cli(config)
    with store_errors(settings):
        made = asyncio.run(first_keys(settings))
    url, secret = resolve_paths(settings)
    err.print(f"store: {url.split('@')[-1]}\nsecret: {secret}")
    if not made:
        err.print("the store already has keys; none created (see `gatehouse keys create`)")
    # labels and keys on one stream, so a pipe keeps them in order
    for what, key in made:
        typer.echo(f"# {what} (shown once, store it now)\n{key}")


def migrate(config: ConfigOpt = None) -> None:
    """Bring the store's schema up to date (also done by `serve` on start)."""
    settings = load_for_cli(config)

    async def go() -> bool:
        identity = IdentityService(settings)
        try:
            return await identity.store.migrate()
        finally:
            await identity.aclose()

    head = head_revision()
    with store_errors(settings):
        migrated = asyncio.run(go())
    if migrated:
        err.print(f"[green]store migrated to revision {head}[/]")
    else:
        err.print(f"[green]store is up to date (revision {head})[/]")
