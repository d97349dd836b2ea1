"""One write per answer: what a connection's protocol writes during one turn of the event loop
goes to the socket in one ``write`` at the end of that turn.

uvicorn writes an answer's head when the app sends ``http.response.start`` and its body when
the app sends ``http.response.body`` — two ``send`` system calls (and two TCP segments) for
every plain answer, though the gateway sends both in the same turn. Corked, they are one.
A stream's chunks, which come in turns of their own, are written as they come (each one turn
later at most). A large body is not joined to its head (that would copy it): the pieces go in
one ``writelines`` (one ``writev`` on uvloop). Closing writes what is pending first; aborting
drops it, as the transport does with its own buffer."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import sys
import termios
from typing import Any

# what a turn wrote is joined into one buffer up to this size; above, the pieces are handed
# over as they are (joining would copy a large answer whole: ~100 ms for 131 MB)
JOIN_UP_TO = 64 * 1024


class CorkedTransport:
    """Wraps a transport: ``write`` gathers, the end of the loop's turn writes."""

    __slots__ = ("_loop", "_pending", "_transport", "written")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self.written = 0  # bytes handed to the transport, ever

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        # counted first: the transport calls the protocol's pause_writing from inside
        # write(), which reads sent() — with these bytes already in the buffer
        size = sum(map(len, pending)) if len(pending) > 1 else len(pending[0])
        self.written += size
        if len(pending) == 1:
            self._transport.write(pending[0])
        elif size <= JOIN_UP_TO:
            self._transport.write(b"".join(pending))
        else:  # a large body is not copied to be joined to its head: one writev for all
            self._transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def sent(self) -> int:
        """Bytes the client's side has taken, ever: those passed on to the kernel, less those
        still in the socket's send queue (Linux's TIOCOUTQ: not yet acknowledged by the
        peer). The kernel's queue is megabytes on a fast link, and a socket is writable again
        only once half of it is free, so the transport's buffer alone would show a client
        reading steadily as one taking nothing for seconds. A system call: for flow-control
        events only, never per write."""
        n = self.written - self._transport.get_write_buffer_size()
        sock = self._transport.get_extra_info("socket")
        # (TCP only: a Unix socket's queue counts its buffers' overhead, not bytes)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, ValueError):
                queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                n -= int.from_bytes(queued, sys.byteorder, signed=True)
        return n

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, …
        return getattr(self._transport, name)
