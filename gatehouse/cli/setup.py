"""``gatehouse init | migrate``: a starter configuration, the store, the first admin key."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gatehouse.cli.common import ConfigOpt, load_for_cli
from gatehouse.config import Settings
from gatehouse.identity.service import IdentityService, resolve_paths
from gatehouse.store.accounts import AccountError

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


async def first_keys(settings: Settings) -> list[tuple[str, str]]:
    """On an empty store: an admin key and a starter project key (org ``default``, project
    ``default/demo``). Returns (what, key) pairs to print once; nothing if keys exist."""
    identity = IdentityService(settings)
    try:
        await identity.start(serve=False)
        accounts = identity.accounts
        if await accounts.key_infos():
            return []
        made: list[tuple[str, str]] = []
        try:
            # the org's unique name settles a race between replicas starting together
            await accounts.create_org("default", "standard")
        except AccountError:
            return made
        await accounts.create_project("default/demo")
        plain, _ = await accounts.create_key(None, scope="admin", name="first admin key")
        made.append(("admin key (for /admin/v1/)", plain))
        plain, _ = await accounts.create_key("default/demo", name="starter key")
        made.append(("API key for default/demo (tier standard)", plain))
        return made
    finally:
        await identity.aclose()


def hand_over(made: list[tuple[str, str]], settings: Settings) -> str | None:
    """Show first-run keys once: on the terminal, or — when stderr is not a terminal (a log
    file, the journal), where secrets must not go — in a private file whose path is logged.
    Returns how a shell gets the API key (for the banner's example): the key itself on a
    terminal, else a ``$(tail …)`` of the file."""
    if not made:
        return None
    if sys.stderr.isatty():
        for what, key in made:
            err.print(f"[bold]first run[/]: {escape(what)} — shown once, store it now:\n  {key}")
        return made[-1][1]
    _, secret_file = resolve_paths(settings)
    path = Path(secret_file).with_name("gatehouse.first-keys")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        for what, key in made:
            handle.write(f"# {what}\n{key}\n")
    err.print(f"first run: the first admin key and API key (for default/demo) are in {path} "
              "(mode 0600) — store them and delete the file", soft_wrap=True, markup=False)
    return f'$(tail -n1 {path})'


def init(config: Annotated[Path, typer.Option("--config", "-c", help="Where to write it.")]
         = Path("gatehouse.toml")) -> None:
    """Write a starter gatehouse.toml (if absent), create the store, print the first keys."""
    if config.exists():
        err.print(f"{config} exists; keeping it")
    else:
        config.write_text(STARTER, encoding="utf-8")
        err.print(f"wrote {config}")
    settings = load_for_cli(config)
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

    async def go() -> None:
        identity = IdentityService(settings)
        try:
            await identity.store.migrate()
        finally:
            await identity.aclose()

    asyncio.run(go())
    err.print("[green]store is up to date[/]")
