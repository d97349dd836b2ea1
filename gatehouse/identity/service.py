"""Everything identity needs, built once from settings: store, state, keys, caches, sessions.

The gateway, the admin API and the CLI all use this one object, so a key revoked from any of
them is announced to every replica the same way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gatehouse.config import ConfigError, Settings
from gatehouse.identity.keys import KeyMaterial, SecretUnusable, load_server_secret
from gatehouse.identity.sessions import SessionManager
from gatehouse.identity.throttle import SignInThrottle
from gatehouse.identity.verifier import EVERYTHING, KeyVerifier, announce
from gatehouse.state import State, open_state
from gatehouse.store.accounts import Accounts
from gatehouse.store.db import Store


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


def server_secret(settings: Settings) -> bytes:
    """The server secret (made on first use); ConfigError when its file cannot be read or
    made, naming the file."""
    try:
        return load_server_secret(settings.identity.secret, resolve_paths(settings)[1])
    except SecretUnusable as exc:
        raise ConfigError(str(settings.source), "identity.secret_file", str(exc)) from None


class IdentityService:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 state: State | None = None, store: Store | None = None) -> None:
        ids = settings.identity
        url = resolve_paths(settings)[0]
        self.settings = settings
        self.store = store or Store(url)
        self.state = state or open_state(settings.storage.state_url)
        self.keys = KeyMaterial(server_secret(settings))
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
