"""The Redis limiter: exact across replicas; every call is one round trip (a Lua script)."""

from __future__ import annotations

from pathlib import Path

from redis import asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gatehouse.quota.limiter import Ask, Decision, LimiterError, Settle

PREFIX = "gatehouse:"
_HERE = Path(__file__).parent


# One KEY per counter; the scripts also touch KEY..":e" (its reservation expiries). That is
# fine on a single Redis (or Sentinel); a Redis Cluster would need hash tags.


class RedisLimiter:
    name = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 2.0) -> None:
        # a bounded pool that makes callers wait for a free connection (not fail) under bursts.
        # A Redis that is down refuses at once; the timeout is for one that is slow, and it is
        # generous on purpose: a burst on a cold pool opens dozens of connections at once, and
        # on a busy replica the event loop may take a while to complete them. A false
        # "unreachable" sends the replica to its local limiter, which over-admits.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=2.0, socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout, health_check_interval=10)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._reserve = self._redis.register_script((_HERE / "reserve.lua").read_text())
        self._settle = self._redis.register_script((_HERE / "settle.lua").read_text())
        self.round_trips = 0

    async def _call(self, script: object, keys: list[str], args: list[object]) -> list[int]:
        self.round_trips += 1
        try:
            result: list[int] = await script(keys=keys, args=args)  # type: ignore[operator]
            return result
        except NoScriptError:  # redis restarted and lost its script cache: load and retry
            self.round_trips += 1
            return await script(keys=keys, args=args)  # type: ignore[operator,no-any-return]
        except (RedisError, OSError) as exc:
            raise LimiterError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> Decision:
        keys = [PREFIX + ask.key for ask in asks]
        spec = " ".join(f"{a.limit} {a.amount} {int(a.expires * 1000)}" for a in asks)
        out = await self._call(self._reserve, keys, [repr(now), rid, repr(now + ttl), spec])
        refused = int(out[1])
        return Decision(bool(out[0]), tuple(int(v) for v in out[2:]),
                        refused - 1 if refused else None)

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        if not settles:
            return
        keys = [PREFIX + s.key for s in settles]
        spec = " ".join(f"{s.actual} {int(s.expires * 1000)}" for s in settles)
        await self._call(self._settle, keys, [rid, spec])

    async def usage(self, keys: list[str], now: float) -> list[int]:
        if not keys:
            return []
        asks = [Ask(k, 0, 0, now + 60) for k in keys]
        return list((await self.reserve("usage-read", asks, now, 0)).used)

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
