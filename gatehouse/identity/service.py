"""Everything identity needs, built once from settings: store, state, keys, caches, sessions.

The gateway, the admin API and the CLI all use this one object, so a key revoked from any of
them is announced to every replica the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gatehouse.config import ConfigError, Settings
from gatehouse.identity.keys import KeyMaterial, SecretUnusable, load_server_secret
from gatehouse.identity.sessions import SessionManager
from gatehouse.identity.throttle import SignInThrottle
from gatehouse.identity.verifier import EVERYTHING, KeyVerifier, announce
from gatehouse.state import State, open_state
from gatehouse.store.accounts import Accounts, stored_keys
from gatehouse.store.db import Store

T = TypeVar("T")


def resolve_paths(settings: Settings) -> tuple[str, str]:
    """The database URL and secret file, relative paths taken from the config file's folder
    (or the working directory when there is no file)."""
    base = settings.base_dir
    url = settings.storage.database_url
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") \
            and url != prefix + ":memory:":
        url = prefix + str((base / url[len(prefix):]).resolve())
    secret_file = Path(settings.identity.secret_file)
    if not secret_file.is_absolute():
        secret_file = base / secret_file
    return url, str(secret_file)


def server_secret(settings: Settings, schema: str | None = None) -> bytes:
    """The server secret; ConfigError when its file cannot be read or made, naming the file.
    A missing file is made only for a store that holds no API keys yet: with keys in it the
    file was lost (deleted, not mounted, not restored), and a new secret would refuse every
    key with nothing said. The store (``schema``: PostgreSQL's, when not the default) is
    asked then; a store that cannot answer raises its error, and no secret is made."""
    url, secret_file = resolve_paths(settings)

    def only_for_a_store_without_keys(path: Path) -> None:
        held = 0 if missing_sqlite_file(url) else _apart(_count_keys(url, schema))
        if held:
            raise SecretUnusable(lost_secret(path, held))

    try:
        return load_server_secret(settings.identity.secret, secret_file,
                                  only_for_a_store_without_keys)
    except SecretUnusable as exc:
        raise ConfigError(str(settings.source), "identity.secret_file", str(exc)) from None


def lost_secret(path: Path, held: int) -> str:
    """What a missing secret file means for a store holding ``held`` keys, and what to do."""
    return (f"the server secret file {path} does not exist, but the store holds {held} API "
            f"key{'s' if held > 1 else ''} (revoked ones included) made with the secret it "
            "held: a new secret would refuse every one of them, so none was made. Restore the "
            "file from your backup (or give that secret as [identity] secret or "
            "GATEHOUSE_IDENTITY__SECRET). If it is lost for good, write a new secret of at "
            f"least 32 characters to {path} yourself (mode 0600, e.g. `openssl rand -hex 32`): "
            "every existing key is then refused and must be issued again (gatehouse keys "
            "rotate KEY_ID, gatehouse keys create --admin)")


def missing_sqlite_file(url: str) -> str | None:
    """The SQLite file ``url`` names when it does not exist (None: it does, it is in memory,
    or the store is PostgreSQL, whose database is made by its administrator)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if Path(parsed.database).exists() else parsed.database


async def _count_keys(url: str, schema: str | None) -> int:
    store = Store(url, schema=schema)
    try:
        return await stored_keys(store)
    finally:
        await store.aclose()


def _apart(work: Coroutine[Any, Any, T]) -> T:
    """``work`` on an event loop of its own, in a thread of its own: the secret is read in
    constructors, some of them called inside a running loop (a worker building its app)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


class IdentityService:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 state: State | None = None, store: Store | None = None) -> None:
        ids = settings.identity
        url = resolve_paths(settings)[0]
        self.settings = settings
        self.store = store or Store(url)
        self.state = state or open_state(settings.storage.state_url)
        self.keys = KeyMaterial(server_secret(settings, self.store.schema))
        self.accounts = Accounts(self.store, self.keys)
        self.verifier = KeyVerifier(self.keys, self.accounts, ttl=ids.key_cache_ttl,
                                    size=ids.key_cache_size, negative_ttl=ids.negative_cache_ttl,
                                    negative_size=ids.negative_cache_size,
                                    stale=ids.key_stale_ttl, clock=clock)
        self.sessions = SessionManager(self.state, idle_seconds=ids.session_idle_minutes * 60,
                                       absolute_seconds=ids.session_absolute_hours * 3600,
                                       clock=clock)
        self.throttle = SignInThrottle(self.state, ids.sign_in, self.keys.derive("sign-in"),
                                       clock)

    async def start(self, *, serve: bool = True) -> None:
        if self.settings.storage.migrate_on_start:
            await self.store.migrate()
        if serve:
            await self.verifier.start(self.state)

    async def key_changed(self, digest: str | None = None) -> None:
        """Announce a revoked key (or, with None, any change to tiers) to every replica."""
        if digest is None:
            self.verifier.invalidated(EVERYTHING)
            await announce(self.state, EVERYTHING)
        else:
            self.verifier.invalidated(digest.encode())
            await announce(self.state, digest)

    async def aclose(self) -> None:
        await self.verifier.aclose()
        await self.state.aclose()
        await self.store.aclose()
