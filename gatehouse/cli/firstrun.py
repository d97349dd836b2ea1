"""The first run of a store: an admin key and a starter API key made on an empty store, and
shown once (``gatehouse init``, and ``gatehouse serve`` on start). Plain output: the serving
process imports neither Typer nor Rich."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gatehouse.config import Settings
from gatehouse.identity.service import IdentityService, resolve_paths
from gatehouse.store.accounts import AccountError, stored_keys


async def first_keys(settings: Settings) -> list[tuple[str, str]]:
    """On an empty store: an admin key and a starter project key (org ``default``, project
    ``default/demo``). Returns (what, key) pairs to print once; nothing if keys exist."""
    identity = IdentityService(settings)
    try:
        await identity.start(serve=False)
        accounts = identity.accounts
        if await stored_keys(identity.store):  # counted: not every key read at each start
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
            print(f"first run: {what} — shown once, store it now:\n  {key}", file=sys.stderr)
        return made[-1][1]
    _, secret_file = resolve_paths(settings)
    path = Path(secret_file).with_name("gatehouse.first-keys")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        for what, key in made:
            handle.write(f"# {what}\n{key}\n")
    print(f"first run: the first admin key and API key (for default/demo) are in {path} "
          "(mode 0600) — store them and delete the file", file=sys.stderr)
    return f'$(tail -n1 {path})'
