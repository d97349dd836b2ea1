"""Timed bans of an address or a network, kept in the state layer so every replica enforces
them, and mirrored in memory so checking one costs no round trip.

    ban(subject) ─► state: edge:ban:<subject> (expires with the ban) + the edge:bans index
                 ─► broadcast on edge.bans ─► every replica's mirror
    banned(ip)   ─► the mirror only (dict lookups; none at all while nobody is banned)

A replica loads every ban when it starts and again whenever its subscription was lost
(messages may have been missed). Repeat offenders get longer bans: each ban made by the
detector within ``repeat_memory_seconds`` of the last doubles, up to ``max_ban_seconds``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict, dataclass

import orjson

from gatehouse.config import DetectorSettings
from gatehouse.edge.rules import RuleError, parse_network
from gatehouse.edge.visitor import IPAddress
from gatehouse.state.base import State, StateError
from gatehouse.turns import in_turns

log = logging.getLogger("gatehouse.edge")
CHANNEL = "edge.bans"
INDEX = "edge:bans"
KEY = "edge:ban:"
STRIKES = "edge:strikes:"
BAN_MAX = 366 * 86400  # the longest ban an administrator may set (API and CLI)
REASON_MAX = 200  # a ban's reason (longer ones the detector makes are cut)
PAGE_BANS = 500  # bans a listing makes at a time


@dataclass(slots=True)
class Ban:
    subject: str      # an address (203.0.113.7) or a network (203.0.113.0/24)
    reason: str
    until: float      # Unix time
    strikes: int = 0  # detector bans of this subject in a row (0: made by hand)
    at: float = 0.0

    def dump(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def load(cls, data: bytes) -> Ban:
        return cls(**orjson.loads(data))


def subject_of(text: str) -> str:
    """The canonical form of a ban subject: a plain address, or a network in CIDR form."""
    net = parse_network(text)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _key(subject: str) -> tuple[int, int, int]:
    """(version, prefix length, network number) of a ban's subject: what banned() looks up."""
    net = ipaddress.ip_network(subject, strict=False)
    return (net.version, net.prefixlen,
            int(net.network_address) >> (net.max_prefixlen - net.prefixlen))


class Bans:
    def __init__(self, state: State, settings: DetectorSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.settings = settings
        self.clock = clock
        self.mirror: dict[str, Ban] = {}
        # prefix lengths with a ban in the mirror, per IP version: what banned() must try
        self._lengths: dict[int, tuple[int, ...]] = {4: (), 6: ()}
        # (version, prefix length, network number) → the subject it is banned under
        self._subjects: dict[tuple[int, int, int], str] = {}
        # (version, prefix length) → how many subjects of the index have it
        self._counts: dict[tuple[int, int], int] = {}
        self._reloading: asyncio.Task[None] | None = None
        self._again = False  # told to reload while a reload was running: once more after it
        self._loads = 0  # each load's number, in the order begun
        self._applied = 0  # the newest load applied: an older one finishing after it is not
        self._running = 0  # loads under way
        self._during: list[bytes] = []  # broadcasts heard meanwhile: applied again after

    # -- the hot path ---------------------------------------------------------------------
    def banned(self, ip: IPAddress) -> Ban | None:
        """The live ban covering ``ip`` (its address or a banned network of it), if any:
        one dict lookup per banned prefix length, on integers (no text, no network objects —
        every request pays this once any ban exists)."""
        lengths = self._lengths[ip.version]
        if not lengths:
            return None
        n, bits, version = int(ip), ip.max_prefixlen, ip.version
        for length in lengths:
            subject = self._subjects.get((version, length, n >> (bits - length)))
            if subject is None:
                continue
            ban = self.mirror.get(subject)
            if ban is not None:
                if ban.until > self.clock():
                    return ban
                self._forget(subject)
        return None

    # -- the mirror -----------------------------------------------------------------------
    def _remember(self, ban: Ban) -> None:
        key = _key(ban.subject)  # first: a subject that is no network (forged) changes nothing
        known = ban.subject in self.mirror  # then its ban is renewed: the index stays
        self.mirror[ban.subject] = ban
        if not known:
            self._indexed(ban.subject, key)

    def _forget(self, subject: str) -> None:
        if self.mirror.pop(subject, None) is not None:
            self._unindexed(subject)

    # A ban made or lifted changes the index by its own subject: an attack banning thousands
    # of addresses one by one, each ban re-reading every other (the index was rebuilt whole),
    # held the event loop ~50 ms per ban at 5,000 bans. Only a load rebuilds it.
    def _index(self) -> None:
        self._subjects, self._counts = {}, {}
        self._lengths = {4: (), 6: ()}
        for subject in self.mirror:
            self._indexed(subject, _key(subject))

    def _indexed(self, subject: str, key: tuple[int, int, int]) -> None:
        previous = self._subjects.get(key)  # the same network written otherwise: one entry
        self._subjects[key] = subject
        if previous is None:
            self._counted(key[0], key[1], 1)

    def _unindexed(self, subject: str) -> None:
        key = _key(subject)
        if self._subjects.get(key) != subject:
            return
        del self._subjects[key]
        self._counted(key[0], key[1], -1)

    def _counted(self, version: int, length: int, change: int) -> None:
        count = self._counts.get((version, length), 0) + change
        if count:
            self._counts[(version, length)] = count
        else:
            del self._counts[(version, length)]
        if count in (0, change):  # a prefix length gone or new: banned() tries these
            self._lengths[version] = tuple(sorted(
                (ln for v, ln in self._counts if v == version), reverse=True))

    def heard(self, message: bytes | None) -> None:
        """A broadcast from some replica (this one included), or None: reload everything."""
        if message is None:
            self._reload_soon()
            return
        self._change(message)

    def _change(self, message: bytes) -> None:
        """Apply a change to the mirror — heard, or made here — and, while a load is under
        way (it may have read the bans before the change), again once it is applied."""
        if self._running:
            self._during.append(message)
        self._apply(message)

    def _apply(self, message: bytes) -> None:
        data = orjson.loads(message)
        if data.get("op") == "unban":
            self._forget(data["subject"])
        else:
            self._remember(Ban.load(orjson.dumps(data["ban"])))

    def _reload_soon(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())
        else:  # the one running may have read the bans before what prompted this
            self._again = True

    async def _reload(self) -> None:
        while True:
            self._again = False
            for delay in (0.0, 0.5, 1, 2, 4, 8):
                await asyncio.sleep(delay)
                try:
                    await self.load()
                    break
                except StateError as exc:
                    log.warning("could not reload bans (%s); keeping the ones known", exc)
            if not self._again:
                return

    async def load(self) -> list[Ban]:
        """Every live ban from the state layer; the mirror becomes exactly that."""
        self._loads += 1
        mine = self._loads
        self._running += 1
        try:
            found = await self.list()
        finally:
            self._running -= 1
        if mine > self._applied:  # a load begun later read later: it wins, whichever ends last
            self._applied = mine
            self.mirror = {ban.subject: ban for ban in found}
            self._index()
            for message in self._during:  # in the order heard: what the read may have missed
                self._apply(message)
        if not self._running:
            self._during = []
        return found

    async def start(self) -> None:
        self.state.subscribe(CHANNEL, self.heard)
        try:
            await self.load()
        except StateError as exc:
            log.warning("could not load bans at start (%s); retrying in the background", exc)
            self._reload_soon()

    async def aclose(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()

    # -- changes --------------------------------------------------------------------------
    async def pages(self, size: int = PAGE_BANS) -> AsyncGenerator[list[Ban], None]:
        """The live bans by subject, ``size`` at a time; ones gone or over leave the index.
        Read in turns (:mod:`gatehouse.turns`): on ``memory://`` no read waits for anything,
        and an attack's 10,000 bans read and made at once held the worker's loop ~55 ms."""
        now = self.clock()
        page: list[Ban] = []
        async for subject in in_turns(sorted(await self.state.set_members(INDEX))):
            data = await self.state.get(KEY + subject)
            ban = Ban.load(data) if data is not None else None
            if ban is None or ban.until <= now:
                await self.state.set_remove(INDEX, subject)
                continue
            page.append(ban)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page

    async def list(self) -> list[Ban]:
        return [ban async for page in self.pages() for ban in page]

    def hold(self, subject: str, reason: str, seconds: float) -> None:
        """Enforce a ban on this replica at once (no I/O), while :meth:`ban` — which works out
        the real length and tells the others — is on its way."""
        now = self.clock()
        # one strike at least: the detector's (a ban with none was made by hand)
        self._change(_banned(Ban(subject_of(subject), reason[:REASON_MAX], now + seconds, 1, now)))

    async def ban(self, subject: str, reason: str, seconds: float | None = None) -> Ban:
        """Ban ``subject`` for ``seconds`` — or, when None, for the detector's growing
        duration (``ban_seconds`` doubled for each earlier ban still remembered)."""
        subject = subject_of(subject)
        now = self.clock()
        strikes = 0
        if seconds is None:
            strikes = 1
            try:
                previous = await self.state.get(STRIKES + subject)
                strikes += int(previous or 0)
                await self.state.put(STRIKES + subject, str(strikes).encode(),
                                     self.settings.repeat_memory_seconds)
            except StateError as exc:
                log.warning("could not count earlier bans of %s (%s)", subject, exc)
            seconds = min(self.settings.ban_seconds * 2 ** min(strikes - 1, 40),
                          self.settings.max_ban_seconds)
        if seconds <= 0:
            raise RuleError("a ban lasts a positive number of seconds")
        ban = Ban(subject, reason[:REASON_MAX], now + seconds, strikes, now)
        self._change(_banned(ban))  # enforced here at once, whatever the state layer does
        await self.state.put(KEY + subject, ban.dump(), seconds)
        await self.state.set_add(INDEX, subject, seconds)
        # said once stored: a state layer that failed has its own error (the CLI printed
        # "banned … until …" and then that Redis could not be reached)
        log.warning("banned %s for %.0f s until %s: %s", subject, seconds,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ban.until)), ban.reason)
        await self.state.publish(CHANNEL, _banned(ban))
        return ban

    async def unban(self, subject: str) -> bool:
        """Lift the ban of ``subject`` and forget its earlier ones; False when it was not
        banned (its earlier bans are forgotten all the same)."""
        subject = subject_of(subject)
        unbanned = orjson.dumps({"op": "unban", "subject": subject})
        self._change(unbanned)
        # the ban alone says whether there was one: remembered strikes are no ban
        existed = await self.state.delete(KEY + subject) > 0
        await self.state.delete(STRIKES + subject)
        await self.state.set_remove(INDEX, subject)
        await self.state.publish(CHANNEL, unbanned)
        if existed:  # nothing to say of a subject that was not banned: the caller says that
            log.warning("unbanned %s", subject)
        return existed


def _banned(ban: Ban) -> bytes:
    """A ban as it is broadcast (and applied here)."""
    return orjson.dumps({"op": "ban", "ban": asdict(ban)})
