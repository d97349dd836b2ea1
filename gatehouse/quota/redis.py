"""The Redis limiter: exact across replicas, at most one round trip per request.

A reservation is one Lua script call over every counter the request touches. With no call
under way it leaves at once; those asked for while calls are under way (under load) wait for
the end of the event loop's turn and go together in one call (up to ``MAX_BATCH``), decided
one after the other by the script exactly as separate calls would be — so many requests share
a round trip, and redis-py's cost per call (most of a request's Redis cost on the gateway's
side) is paid once for all of them. Its settle does not need an answer, so it is queued and
rides along with the next reservation this process sends (the same script applies it first);
when no reservation comes within ``SETTLE_DELAY`` seconds, the queue is flushed on its own. A
settle is therefore at most ``SETTLE_DELAY`` late (its reservation is held that much longer —
conservative, never over-admitting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from gatehouse.quota.limiter import Ask, Decision, LimiterError, Settle
from gatehouse.state.redis import bounded_client

PREFIX = "gatehouse:"
SETTLE_DELAY = 0.05
MAX_RIDING = 256  # settle entries carried by one call at most
MAX_BATCH = 16  # reservations in one call at most (it holds Redis: ~2 ms for 16 of 6 counters)
_HERE = Path(__file__).parent
log = logging.getLogger("gatehouse.quota")

# One KEY per counter; the scripts also touch KEY..":e" (its reservation expiries). That is
# fine on a single Redis (or Sentinel); a Redis Cluster would need hash tags.

Entry = tuple[str, str, str, int, int]  # key, commit key, rid, actual, commit expires_ms
Reservation = tuple[str, list[Ask], float, float, str]  # rid, asks, now, until, kind


def _dropped(out: list[Any]) -> None:
    """A script's count of settles that could not be applied (a key of ours holding another
    type, or a field that is not a number): dropped there, or they would fail every call."""
    if int(out[0]):
        log.warning("quota: %d settle(s) could not be applied in Redis (a counter's key holds "
                    "another type or a field is not a number); dropped", int(out[0]))


def _run_kept(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as a task held in ``tasks`` until it ends (the loop keeps only a weak
    reference to a task; ``aclose`` waits for what is there)."""
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class RedisLimiter:
    name = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 2.0) -> None:
        # A Redis that is down refuses at once; the timeout is for one that is slow, and it is
        # generous on purpose: a burst on a cold pool opens dozens of connections at once, and
        # on a busy replica the event loop may take a while to complete them. A false
        # "unreachable" sends the replica to its local limiter, which over-admits.
        self._redis = bounded_client(url, socket_timeout, pool_timeout=socket_timeout)
        self._timeout = socket_timeout
        self._closed = False
        # one script reserves and settles: a settle with nothing to reserve is the same call
        self._reserve = self._redis.register_script((_HERE / "reserve.lua").read_text())
        self.round_trips = {"reserve": 0, "settle": 0, "read": 0}
        self._pending: list[Entry] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        # reservations asked for while a call was under way, for the call at the end of the
        # turn; and the calls under way
        self._waiting: list[tuple[Reservation, asyncio.Future[Decision]]] = []
        self._busy = 0
        self._calls: set[asyncio.Task[None]] = set()

    async def _call(self, script: object, keys: list[str], args: list[object],
                    kind: str) -> list[int]:
        self.round_trips[kind] += 1
        try:
            try:
                result: list[int] = await script(keys=keys, args=args)  # type: ignore[operator]
            except NoScriptError:  # redis restarted and lost its script cache: load and retry
                self.round_trips[kind] += 1
                result = await script(keys=keys, args=args)  # type: ignore[operator]
        except (RedisError, OSError) as exc:  # the retry's too (a second NOSCRIPT included)
            raise LimiterError(f"redis: {type(exc).__name__}: {exc}") from exc
        return result

    def _take(self) -> list[Entry]:
        riding, self._pending = self._pending[:MAX_RIDING], self._pending[MAX_RIDING:]
        return riding

    async def _send(self, reservations: list[Reservation], riding: list[Entry],
                    kind: str) -> list[int]:
        keys: list[str] = []
        for e in riding:
            keys += (PREFIX + e[0], PREFIX + e[1])
        args: list[object] = [" ".join(f"{e[2]} {e[3]} {e[4]}" for e in riding)]
        for rid, asks, now, until, _ in reservations:
            for ask in asks:
                keys += (PREFIX + ask.key, PREFIX + (ask.previous or ask.key))
            args += (repr(now), rid, repr(until),
                     " ".join(f"{a.limit} {a.amount} {int(a.expires * 1000)} "
                              f"{int(bool(a.previous))}" for a in asks))
        return await self._call(self._reserve, keys, args, kind)

    async def _decided(self, reservations: list[Reservation]) -> list[Decision | LimiterError]:
        """One call for ``reservations``, the queued settles riding along: their decisions
        (a reservation whose counters Redis refused — a key of ours holding another type —
        fails alone, as a LimiterError: the others in the call are decided)."""
        riding = self._take()
        kind = "reserve" if any(r[4] == "reserve" for r in reservations) else reservations[0][4]
        self._busy += 1
        try:
            out = await self._send(reservations, riding, kind)
        except BaseException:
            self._pending[:0] = riding  # not applied: they go with the next call
            raise
        finally:
            self._busy -= 1
        _dropped(out)
        decisions: list[Decision | LimiterError] = []
        at = 1
        for r in reservations:
            n, allowed, refused = len(r[1]), int(out[at]), out[at + 1]
            if allowed < 0:
                why = refused.decode("utf-8", "replace") if isinstance(refused, bytes) \
                    else str(refused)
                decisions.append(LimiterError(f"redis: {why}"))
            else:
                decisions.append(Decision(bool(allowed), tuple(int(v) for v in
                                                               out[at + 2:at + 2 + n]),
                                          int(refused) - 1 if int(refused) else None))
            at += 2 + n
        return decisions

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float,
                      kind: str = "reserve") -> Decision:
        reservation = (rid, asks, now, now + ttl, kind)
        if not self._busy and not self._waiting:  # nothing under way: at once, its own call
            (decided_now,) = await self._decided([reservation])
            if isinstance(decided_now, LimiterError):
                raise decided_now
            return decided_now
        decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        if not self._waiting:  # its call leaves next turn, with those asked for meanwhile
            _run_kept(self._calls, self._decide_waiting())
        self._waiting.append((reservation, decided))
        return await decided

    async def _decide_waiting(self) -> None:
        waiting = [w for w in self._waiting if not w[1].done()]  # (a caller gone meanwhile)
        self._waiting = []
        for start in range(MAX_BATCH, len(waiting), MAX_BATCH):  # more than one call holds
            _run_kept(self._calls, self._answer(waiting[start:start + MAX_BATCH]))
        await self._answer(waiting[:MAX_BATCH])

    async def _answer(self, waiting: list[tuple[Reservation, asyncio.Future[Decision]]]
                      ) -> None:
        if not waiting:
            return
        try:
            decisions = await self._decided([r for r, _ in waiting])
        except asyncio.CancelledError:  # (the limiter is closing)
            for _, decided in waiting:
                decided.cancel()
            raise
        except Exception as exc:  # each caller raises it (LimiterError: Redis unreachable)
            for _, decided in waiting:
                if not decided.done():
                    decided.set_exception(exc)
            return
        for (_, decided), decision in zip(waiting, decisions, strict=True):
            if decided.done():
                continue
            if isinstance(decision, LimiterError):
                decided.set_exception(decision)
            else:
                decided.set_result(decision)

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        self._pending += [(s.key, s.commit_key or s.key, rid, s.actual,
                           int((s.commit_expires if s.commit_key else s.expires) * 1000))
                          for s in settles]
        if self._flusher is None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(SETTLE_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flusher = None
        _run_kept(self._flushing, self.flush())

    async def flush(self) -> None:
        """Send queued settles that no reservation has carried."""
        while self._pending:
            batch = self._take()
            try:
                _dropped(await self._send([], batch, "settle"))
            except LimiterError as exc:
                self._pending[:0] = batch
                if self._closed:  # (the last flush: nobody retries)
                    log.warning("could not settle %d counters at shutdown (%s); their "
                                "reservations lapse", len(batch), exc)
                    return
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
        # every reservation under way gets its answer — the calls of a turn (made while the
        # first waited), and those sent at once by their callers — before the last settles
        # go (their riding settles are queued again if a call fails); bounded by the socket
        # timeout each call has
        loop = asyncio.get_running_loop()
        until = loop.time() + 2 * self._timeout + 1
        while (self._calls or self._busy) and loop.time() < until:
            if self._calls:
                await asyncio.wait(set(self._calls), timeout=until - loop.time())
            else:
                await asyncio.sleep(0.01)
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        for task in list(self._flushing):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(LimiterError):
            await self.flush()
        await self._redis.aclose(close_connection_pool=True)
