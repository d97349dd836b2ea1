"""The single-machine state shared with the CLI: a running gateway on ``memory://`` serves its
in-process state on a Unix socket, and the CLI uses it through :class:`SocketState`, so
``gatehouse bans add`` or ``keys revoke`` reach the running gateway at once — as they do
through Redis (docs/deployment.md, "One machine").

The socket lives beside the server secret (``gatehouse.secret`` → ``gatehouse.sock``), is
made with mode 0600 and is only served by a gateway with one worker: whoever can connect can
read and write sessions and bans, exactly as whoever can read the secret file and the store
could. One JSON object per line each way; values travel base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gatehouse.state.base import Backoff, Handler, StateError
from gatehouse.state.memory import MemoryState

log = logging.getLogger("gatehouse.state")
MAX_LINE = 1 << 20   # a request or an answer; state values are small
MAX_PATH = 100       # sun_path holds 108 bytes


def socket_path(secret_file: str) -> str:
    """Where the gateway beside ``secret_file`` serves its state."""
    path = Path(secret_file)
    wanted = str(path.with_name(path.stem + ".sock"))
    if len(wanted.encode()) <= MAX_PATH:
        return wanted
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"gatehouse-{digest}.sock")


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _u(text: str) -> bytes:
    return base64.b64decode(text)


# -- the gateway's side ------------------------------------------------------------------------

class StateServer:
    """Serves ``state`` on ``path`` until closed."""

    def __init__(self, state: MemoryState, path: str) -> None:
        self.state = state
        self.path = path
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> bool:
        """Listen; False when another live gateway already serves this path."""
        if os.path.exists(self.path):
            if await _alive(self.path):
                log.warning("another gatehouse serves %s; the CLI reaches that one", self.path)
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left by a gateway that did not shut down
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path,
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        return True

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = {"ok": await self._do(json.loads(line))}
                except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _do(self, request: dict[str, Any]) -> Any:
        op, a = request["op"], request.get("args", [])
        s = self.state
        if op == "get":
            value = await s.get(a[0])
            return None if value is None else _b(value)
        if op == "put":
            return await s.put(a[0], _u(a[1]), float(a[2]))
        if op == "put_new":
            return await s.put_new(a[0], _u(a[1]), float(a[2]))
        if op == "delete":
            return await s.delete(*a)
        if op == "set_add":
            return await s.set_add(a[0], a[1], float(a[2]))
        if op == "set_remove":
            return await s.set_remove(a[0], a[1])
        if op == "set_members":
            return sorted(await s.set_members(a[0]))
        if op == "publish":
            return await s.publish(a[0], _u(a[1]))
        if op == "attempt":
            allowed, wait = await s.attempt([Backoff(*c) for c in a[0]], float(a[1]))
            return [allowed, wait]
        if op == "refund":
            return await s.refund(Backoff(*a[0]))
        if op == "ping":
            return True
        raise KeyError(f"unknown op {op!r}")


async def _alive(path: str) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


# -- the CLI's side ----------------------------------------------------------------------------

class SocketState:
    """The State protocol over a running gateway's socket. Subscriptions stay local: the CLI
    publishes, the gateway listens."""

    name = "memory (shared by the running gateway)"

    def __init__(self, path: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.path = path
        self._reader, self._writer = reader, writer
        self._lock = asyncio.Lock()
        self._handlers: dict[str, list[Handler]] = {}

    @classmethod
    async def connect(cls, path: str) -> SocketState | None:
        """The running gateway's state, or None when none serves ``path``."""
        if not os.path.exists(path):
            return None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=MAX_LINE), 2.0)
        except (OSError, TimeoutError):
            return None
        return cls(path, reader, writer)

    async def _call(self, op: str, *args: Any) -> Any:
        async with self._lock:
            try:
                self._writer.write(json.dumps({"op": op, "args": list(args)}).encode() + b"\n")
                await self._writer.drain()
                line = await asyncio.wait_for(self._reader.readline(), 10.0)
            except (OSError, TimeoutError, asyncio.LimitOverrunError) as exc:
                raise StateError(f"the gateway at {self.path} stopped answering") from exc
        if not line:
            raise StateError(f"the gateway at {self.path} closed the connection")
        answer = json.loads(line)
        if "error" in answer:
            raise StateError(answer["error"])
        return answer["ok"]

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", key)
        return None if value is None else _u(value)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call("put", key, _b(value), ttl)

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._call("put_new", key, _b(value), ttl))

    async def delete(self, *keys: str) -> int:
        return int(await self._call("delete", *keys))

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        await self._call("set_add", key, member, ttl)

    async def set_remove(self, key: str, member: str) -> None:
        await self._call("set_remove", key, member)

    async def set_members(self, key: str) -> set[str]:
        return set(await self._call("set_members", key))

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call("publish", channel, _b(message))
        for handler in self._handlers.get(channel, ()):
            handler(message)

    async def attempt(self, counters: Sequence[Backoff], now: float) -> tuple[bool, float]:
        allowed, wait = await self._call("attempt", [list(c) for c in counters], now)
        return bool(allowed), float(wait)

    async def refund(self, counter: Backoff) -> None:
        await self._call("refund", list(counter))

    def subscribe(self, channel: str, handler: Handler) -> None:
        # this process's own listeners hear what it publishes (as with memory://); the
        # gateway's handlers run there on publish — the CLI never needs to hear the gateway
        self._handlers.setdefault(channel, []).append(handler)

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except StateError:
            return False

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class UnsharedState(MemoryState):
    """The CLI's own memory when no gateway was reached: it remembers whether anything was
    changed that only a running gateway could have applied."""

    def __init__(self, path: str, clock: Callable[[], float] | None = None) -> None:
        super().__init__() if clock is None else super().__init__(clock)
        self.path = path
        self.changed = False

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self.changed = True
        await super().put(key, value, ttl)

    async def delete(self, *keys: str) -> int:
        self.changed = True
        return await super().delete(*keys)

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        self.changed = True
        await super().set_add(key, member, ttl)

    async def set_remove(self, key: str, member: str) -> None:
        self.changed = True
        await super().set_remove(key, member)

    async def publish(self, channel: str, message: bytes) -> None:
        self.changed = True
        await super().publish(channel, message)
