"""Sign-in throttling: failed sign-ins slow down, per account and per address.

    sign-in ─► attempt(account, address) ─► locked? ── yes ─► 429 "try again in …" (no check)
                      │ no (the attempt is counted)
                      ▼
               password check ─► right: the account's count is reset, the address's attempt
                      │                  is taken back
                      ▼ wrong
               401, and "try again in …" when this failure locked a counter

An attempt is counted *before* the password is checked, in one atomic step of the state layer
(a Lua script in Redis), so a burst of parallel guesses gets the free attempts and one more,
not one argon2 check each; and with Redis every replica sees the same counts. A counter is
keyed by the email as typed (normalised), whether or not such an account exists, so a locked
unknown email looks exactly like a locked real one — and a locked sign-in answers without
looking the account up or checking a password, so it takes the same time for both.

A success resets the account's count but only takes its own attempt back from the address's
(lifting the address's lock only when that brings it back within its free attempts):
otherwise anyone with one working account could clear their address between guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatehouse.config import SignInSettings
from gatehouse.state.base import Backoff, State


@dataclass(frozen=True, slots=True)
class Attempt:
    """``allowed``: go on and check the password. ``wait``: when refused, seconds until the
    sign-in may be tried again; when allowed, how long a failure of this attempt locks it
    for (0.0: not at all)."""

    allowed: bool
    wait: float
    account: Backoff
    address: Backoff


def address_key(address: str) -> str:
    """IPv4 addresses one by one; IPv6 by /64, which one subscriber usually holds whole."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


class SignInThrottle:
    def __init__(self, state: State, settings: SignInSettings, secret: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.settings = settings
        self.secret = secret  # keys the email hash: the state layer never holds an email
        self.clock = clock

    def _account(self, email: str) -> str:
        normal = email.strip().lower()[:254].encode()
        return "signin:account:" + hmac.new(self.secret, normal, hashlib.sha256).hexdigest()[:32]

    async def attempt(self, email: str, address: str) -> Attempt:
        s = self.settings
        account = Backoff(self._account(email), s.account_free_failures,
                          s.first_lock_seconds, s.max_lock_seconds, s.memory_seconds)
        place = Backoff("signin:address:" + address_key(address), s.address_free_failures,
                        s.first_lock_seconds, s.max_lock_seconds, s.memory_seconds)
        if not s.enabled:
            return Attempt(True, 0.0, account, place)
        allowed, wait = await self.state.attempt([account, place], self.clock())
        return Attempt(allowed, wait, account, place)

    async def unlock(self, email: str, address: str | None = None) -> int:
        """Forget the failures counted for ``email`` (and, if given, for ``address``): an
        administrator lifting a lock. How many counters were there."""
        keys = [self._account(email)]
        if address is not None:
            keys.append("signin:address:" + address_key(address))
        return await self.state.delete(*keys)

    async def succeeded(self, attempt: Attempt) -> None:
        if not self.settings.enabled:
            return
        await self.state.delete(attempt.account.key)
        await self.state.refund(attempt.address)

    async def signed_up(self, attempt: Attempt) -> None:
        """An account was made (or signed in to) by sign-up: its own count is reset, but the
        address keeps the attempt, so one address cannot make accounts without end."""
        if self.settings.enabled:
            await self.state.delete(attempt.account.key)
