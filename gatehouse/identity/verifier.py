"""API key verification without a SQL round trip on the hot path.

    key ─► well-formed? (HMAC check, no I/O) ─► cache of found keys ─► cache of refused keys
        ─► one store query (shared by concurrent requests for the same key) ─► cached

Revocation: whoever revokes publishes the key's hash on ``identity.invalidate``; every replica
drops it from its cache at once. If the state layer is unreachable, cached entries still expire
after ``key_cache_ttl`` seconds, which bounds how long a revoked key can keep working.

A store outage is not an API outage: a key verified within the last ``key_stale_ttl`` seconds
is still served from its expired cache entry while the store cannot be asked (counted, and
logged once a minute). Revocations keep arriving through the state layer and drop stale entries
too; so a revoked key can outlive its revocation only if that announcement was lost *and* the
store went down within ``key_cache_ttl`` of it — for at most ``key_stale_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gatehouse.identity.cache import MISS, TTLCache
from gatehouse.identity.keys import MAX_KEY_CHARS, KeyMaterial
from gatehouse.state.base import State, StateError
from gatehouse.store.accounts import Accounts, KeyRecord
from gatehouse.store.flusher import Flusher

log = logging.getLogger("gatehouse.identity")
CHANNEL = "identity.invalidate"
EVERYTHING = b"*"
LAST_USED_FLUSH_SECONDS = 30.0
STALE_WARNING_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The key was not cached and the store could not be asked."""


class KeyVerifier:
    def __init__(self, keys: KeyMaterial, accounts: Accounts, *, ttl: float, size: int,
                 negative_ttl: float, negative_size: int, stale: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 on_stale: Callable[[], None] | None = None) -> None:
        self.keys = keys
        self.accounts = accounts
        self.found: TTLCache[KeyRecord] = TTLCache(size, ttl, stale=stale)
        self.on_stale = on_stale
        self._stale_warned = -STALE_WARNING_SECONDS
        self.refused: TTLCache[bool] = TTLCache(negative_size, negative_ttl)
        self._clock = clock
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._last_used: dict[str, float] = {}
        self._flusher = Flusher(self.flush_last_used, LAST_USED_FLUSH_SECONDS)

    async def verify(self, key: str) -> KeyRecord | None:
        """The usable key record for ``key``, or None (unknown, revoked, expired, malformed:
        the caller answers all of them the same way)."""
        if len(key) > MAX_KEY_CHARS:
            return None
        digest = self.keys.digest(key)
        record = self.found.get(digest)
        if record is MISS:
            # a key known good needs no form check (one HMAC, not two, per request); any
            # other must be one this server could have minted before the store is asked
            if not self.keys.well_formed(key) or self.refused.get(digest) is not MISS:
                return None
            try:
                record = await self._lookup(digest)
            except StoreUnavailable:
                record = self.found.get_stale(digest)
                if record is MISS:
                    raise
                self._served_stale()
        assert record is None or isinstance(record, KeyRecord)
        if record is None or not record.usable(self._clock()):
            return None
        self._last_used[record.id] = self._clock()
        return record

    def _served_stale(self) -> None:
        if self.on_stale is not None:
            self.on_stale()
        now = time.monotonic()
        if now - self._stale_warned >= STALE_WARNING_SECONDS:
            self._stale_warned = now
            log.warning("the store cannot be reached: serving keys verified within "
                        "key_stale_ttl from the cache; keys not seen lately get 503 "
                        "identity_unavailable")

    async def _lookup(self, digest: str) -> KeyRecord | None:
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            record = await self.accounts.find_key(digest)
        except Exception as exc:
            log.warning("key lookup failed: %s", type(exc).__name__)
            future.set_exception(StoreUnavailable())
            future.exception()  # retrieved here, so a future nobody else awaits is quiet
            raise StoreUnavailable() from exc
        finally:
            self._pending.pop(digest, None)
        if record is not None and record.usable(self._clock()):
            self.found.put(digest, record)
        else:
            self.refused.put(digest, True)
            record = None
        future.set_result(record)
        return record

    # -- invalidation ------------------------------------------------------------------
    def invalidated(self, message: bytes | None) -> None:
        if message is None or message == EVERYTHING:
            # re-check every key on its next use; while the store is down, stale entries serve
            self.found.expire_all()
            self.refused.clear()
            return
        digest = message.decode()
        self.found.drop(digest)
        self.refused.drop(digest)

    async def start(self, state: State) -> None:
        state.subscribe(CHANNEL, self.invalidated)
        self._flusher.start()

    async def flush_last_used(self) -> None:
        batch, self._last_used = self._last_used, {}
        try:
            await self.accounts.touch_keys(batch)
        except Exception as exc:  # last-used times are advisory: never fail a request for them
            log.warning("could not record key last-used times: %s", type(exc).__name__)

    async def aclose(self) -> None:
        await self._flusher.aclose()


async def announce(state: State, digest: str | bytes) -> None:
    """Tell every replica to forget a key (or, with ``EVERYTHING``, all of them)."""
    message = digest if isinstance(digest, bytes) else digest.encode()
    try:
        await state.publish(CHANNEL, message)
    except StateError as exc:
        log.warning("could not announce a key change (%s); replicas will notice within the "
                    "key cache ttl", exc)
