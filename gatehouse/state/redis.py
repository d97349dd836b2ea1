"""Redis state, shared by every replica. Keys live under ``gatehouse:``; broadcasts use
pub/sub, and a lost subscription tells its handlers (None) so they drop what they cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from gatehouse.state.base import Backoff, Handler, StateError

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

log = logging.getLogger("gatehouse.state")
PREFIX = "gatehouse:"
_HERE = Path(__file__).parent


@contextlib.asynccontextmanager
async def _wrapped(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StateError(f"redis {what} failed: {type(exc).__name__}") from exc


def client_name() -> str:
    """What this process's connections are called in Redis's ``CLIENT LIST``: the host and
    process id, so an operator can tell which replica holds which connections."""
    return f"gatehouse:{socket.gethostname()}:{os.getpid()}"


def bounded_client(url: str, socket_timeout: float,
                   pool_timeout: float = 2.0) -> aioredis.Redis:
    """A client on a bounded pool that makes callers wait for a free connection (rather than
    fail) under bursts, up to ``pool_timeout``; close it with
    ``aclose(close_connection_pool=True)``."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=pool_timeout, socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout, health_check_interval=10,
        client_name=client_name())
    return aioredis.Redis(connection_pool=pool)


def _tell(handlers: Sequence[Handler], message: bytes | None) -> None:
    """Each handler hears ``message``; one that fails is logged, and neither stops the others
    nor the listener (a listener that died would leave every subscription deaf)."""
    for handler in list(handlers):
        try:
            handler(message)
        except Exception:
            log.exception("a subscription handler failed")


class RedisState:
    name = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 1.0) -> None:
        self.url = url
        self._redis = bounded_client(url, socket_timeout)
        self._handlers: dict[str, list[Handler]] = {}
        # handlers not yet told that their subscription is live (they hear None then)
        self._waiting: dict[str, list[Handler]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None  # the listener's, while it is subscribed
        self._subscribing = asyncio.Lock()
        self._adding: set[asyncio.Task[None]] = set()
        self._attempt = self._redis.register_script((_HERE / "attempt.lua").read_text())
        self._refund = self._redis.register_script((_HERE / "refund.lua").read_text())

    async def get(self, key: str) -> bytes | None:
        async with _wrapped("get"):
            value = await self._redis.get(PREFIX + key)
            return value.encode() if isinstance(value, str) else value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        async with _wrapped("set"):
            await self._redis.set(PREFIX + key, value, px=max(1, int(ttl * 1000)))

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        async with _wrapped("set nx"):
            done = await self._redis.set(PREFIX + key, value, px=max(1, int(ttl * 1000)),
                                         nx=True)
        return bool(done)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with _wrapped("delete"):
            return int(await self._redis.delete(*(PREFIX + k for k in keys)))

    async def attempt(self, counters: Sequence[Backoff], now: float) -> tuple[bool, float]:
        args: list[str | float] = [repr(now)]
        for c in counters:
            args += [c.free, repr(c.first), repr(c.longest), repr(c.memory)]
        async with _wrapped("attempt"):
            go, seconds = await self._attempt(keys=[PREFIX + c.key for c in counters],
                                              args=args)
        return bool(int(go)), float(seconds)

    async def refund(self, counter: Backoff) -> None:
        async with _wrapped("refund"):
            await self._refund(keys=[PREFIX + counter.key], args=[counter.free])

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        async with _wrapped("set_add"):
            # GT: a later, shorter ttl never shortens the set's life (redis ≥ 7)
            pipe = self._redis.pipeline(transaction=True)
            pipe.sadd(PREFIX + key, member)
            pipe.pexpire(PREFIX + key, max(1, int(ttl * 1000)), nx=True)
            pipe.pexpire(PREFIX + key, max(1, int(ttl * 1000)), gt=True)
            await pipe.execute()

    async def set_remove(self, key: str, member: str) -> None:
        async with _wrapped("set_remove"):
            await self._redis.srem(PREFIX + key, member)

    async def set_members(self, key: str) -> set[str]:
        async with _wrapped("set_members"):
            members = await self._redis.smembers(PREFIX + key)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def publish(self, channel: str, message: bytes) -> None:
        async with _wrapped("publish"):
            await self._redis.publish(PREFIX + channel, message)

    def subscribe(self, channel: str, handler: Handler) -> None:
        name = PREFIX + channel
        self._handlers.setdefault(name, []).append(handler)
        self._waiting.setdefault(name, []).append(handler)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        else:  # added to the live connection (a restart would lose what the others hear)
            task = asyncio.get_running_loop().create_task(self._add(name))
            self._adding.add(task)
            task.add_done_callback(self._adding.discard)

    async def _add(self, name: str) -> None:
        async with self._subscribing:
            if self._pubsub is None:
                return  # (re)connecting: the listener subscribes every channel
            with contextlib.suppress(RedisError, OSError):  # the listener sees it, reconnects
                await self._pubsub.subscribe(name)

    def _live(self, name: str) -> None:
        """``name``'s subscription is confirmed: its handlers not yet told hear None."""
        _tell(self._waiting.pop(name, ()), None)

    async def _listen(self) -> None:
        delay = 0.1
        missed = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with self._subscribing:
                    channels = list(self._handlers)
                    await pubsub.subscribe(*channels)
                    self._pubsub = pubsub
                # live once Redis has confirmed every channel (subscribe() only sends)
                unconfirmed = set(channels)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] != "subscribe":
                        self._dispatch(message)
                        continue
                    name = _text(message["channel"])
                    if name not in unconfirmed:  # a channel added meanwhile is live
                        self._live(name)
                        continue
                    unconfirmed.discard(name)
                    if unconfirmed:
                        continue
                    # messages sent while we were away, or before a subscription went live
                    # (a ban made while a replica starts, between its load of the bans and
                    # this), are gone: say so — "reload" — to every handler after an outage,
                    # and once to each new one, when its channel is confirmed
                    for name in channels:
                        waiting = self._waiting.pop(name, [])
                        _tell(self._handlers[name] if missed else waiting, None)
                    missed = False
                    delay = 0.1
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except (RedisError, OSError) as exc:
                if not missed:
                    log.warning("redis subscription lost (%s); retrying", type(exc).__name__)
                    for handlers in list(self._handlers.values()):
                        _tell(handlers, None)
                missed = True
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._pubsub = None

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        _tell(self._handlers.get(_text(message["channel"]), ()), message["data"])

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        for task in list(self._adding):
            task.cancel()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self._redis.aclose(close_connection_pool=True)


def _text(channel: str | bytes) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel
