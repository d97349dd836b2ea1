"""The Redis limiter: exact across replicas, one round trip per request.

A reservation is one Lua script call over every counter the request touches. Its settle does
not need an answer, so it is queued and rides along with the next reservation this process
sends (the same script applies it first); when no reservation comes within
``SETTLE_DELAY`` seconds, the queue is flushed on its own. Under load a request therefore
costs one round trip; a settle is at most ``SETTLE_DELAY`` late (its reservation is held that
much longer — conservative, never over-admitting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from redis.exceptions import NoScriptError, RedisError

from gatehouse.quota.limiter import Ask, Decision, LimiterError, Settle
from gatehouse.state.redis import bounded_client

PREFIX = "gatehouse:"
SETTLE_DELAY = 0.05
MAX_RIDING = 256  # settle entries carried by one reservation at most
_HERE = Path(__file__).parent
log = logging.getLogger("gatehouse.quota")

# One KEY per counter; the scripts also touch KEY..":e" (its reservation expiries). That is
# fine on a single Redis (or Sentinel); a Redis Cluster would need hash tags.

Entry = tuple[str, str, str, int, int]  # key, commit key, rid, actual, commit expires_ms


class RedisLimiter:
    name = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 2.0) -> None:
        # A Redis that is down refuses at once; the timeout is for one that is slow, and it is
        # generous on purpose: a burst on a cold pool opens dozens of connections at once, and
        # on a busy replica the event loop may take a while to complete them. A false
        # "unreachable" sends the replica to its local limiter, which over-admits.
        self._redis = bounded_client(url, socket_timeout, pool_timeout=socket_timeout)
        # one script reserves and settles: a settle with nothing to reserve is the same call
        self._reserve = self._redis.register_script((_HERE / "reserve.lua").read_text())
        self.round_trips = {"reserve": 0, "settle": 0, "read": 0}
        self._pending: list[Entry] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def _call(self, script: object, keys: list[str], args: list[object],
                    kind: str) -> list[int]:
        self.round_trips[kind] += 1
        try:
            result: list[int] = await script(keys=keys, args=args)  # type: ignore[operator]
            return result
        except NoScriptError:  # redis restarted and lost its script cache: load and retry
            self.round_trips[kind] += 1
            return await script(keys=keys, args=args)  # type: ignore[operator,no-any-return]
        except (RedisError, OSError) as exc:
            raise LimiterError(f"redis: {type(exc).__name__}: {exc}") from exc

    def _take(self) -> list[Entry]:
        riding, self._pending = self._pending[:MAX_RIDING], self._pending[MAX_RIDING:]
        return riding

    async def _send(self, rid: str, asks: list[Ask], now: float, ttl: float,
                    riding: list[Entry], kind: str = "reserve") -> list[int]:
        keys: list[str] = []
        for ask in asks:
            keys += (PREFIX + ask.key, PREFIX + (ask.previous or ask.key))
        for e in riding:
            keys += (PREFIX + e[0], PREFIX + e[1])
        spec = " ".join(f"{a.limit} {a.amount} {int(a.expires * 1000)} {int(bool(a.previous))}"
                        for a in asks)
        args: list[object] = [repr(now), rid, repr(now + ttl), spec]
        if riding:
            args.append(" ".join(f"{e[2]} {e[3]} {e[4]}" for e in riding))
        return await self._call(self._reserve, keys, args, kind)

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float,
                      kind: str = "reserve") -> Decision:
        riding = self._take()
        try:
            out = await self._send(rid, asks, now, ttl, riding, kind)
        except BaseException:
            self._pending[:0] = riding  # not applied: they go with the next call
            raise
        refused = int(out[1])
        return Decision(bool(out[0]), tuple(int(v) for v in out[2:]),
                        refused - 1 if refused else None)

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        self._pending += [(s.key, s.commit_key or s.key, rid, s.actual,
                           int((s.commit_expires if s.commit_key else s.expires) * 1000))
                          for s in settles]
        if self._flusher is None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(SETTLE_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flusher = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Send queued settles that no reservation has carried."""
        while self._pending:
            batch = self._take()
            try:
                await self._send("settle", [], 0.0, 0.0, batch, "settle")
            except LimiterError as exc:
                self._pending[:0] = batch
                log.warning("could not settle %d counters (%s); retrying", len(batch), exc)
                if self._flusher is None:
                    self._flusher = asyncio.get_running_loop().call_later(
                        1.0, self._start_flush)
                return

    async def ping(self) -> None:
        self.round_trips["read"] += 1
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise LimiterError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def prepare(self) -> None:
        self.round_trips["read"] += 1
        try:
            await self._redis.script_load(self._reserve.script)
        except (RedisError, OSError) as exc:
            log.warning("quota: could not load the script into Redis at startup (%s); the "
                        "first request will", type(exc).__name__)

    async def usage(self, asks: list[Ask], now: float) -> list[int]:
        if not asks:
            return []
        reads = [Ask(a.key, a.limit, 0, a.expires, a.previous) for a in asks]
        return list((await self.reserve("usage-read", reads, now, 0, "read")).used)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        for task in list(self._flushing):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(LimiterError):
            await self.flush()
        await self._redis.aclose(close_connection_pool=True)
