"""The corked transport's count of what the client's side has taken (edge/cork.py), read by
the protocol's flow control — including from inside the transport's own ``write``, where
asyncio and uvloop call ``pause_writing``."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from gatehouse.edge.cork import CorkedTransport


class BufferingTransport:
    """Keeps everything written (a client that reads nothing), and tells ``on_write``."""

    def __init__(self) -> None:
        self.buffered = 0
        self.seen_inside: list[int] = []
        self.cork: CorkedTransport | None = None

    def write(self, data: bytes) -> None:
        self.buffered += len(data)
        assert self.cork is not None
        self.seen_inside.append(self.cork.sent())  # as pause_writing would

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_nothing_is_taken_while_it_waits_in_the_buffer() -> None:
    transport = BufferingTransport()
    loop = asyncio.get_running_loop()
    cork = transport.cork = CorkedTransport(transport, loop)  # type: ignore[arg-type]
    cork.write(b"x" * 100_000)
    cork.flush()
    cork.write(b"y" * 50_000)
    cork.flush()
    # counted before the transport saw them: never negative, never the pausing write
    # credited as taken
    assert transport.seen_inside == [0, 0]
    assert cork.sent() == 0
    transport.buffered -= 30_000  # the kernel took some
    assert cork.sent() == 30_000


async def test_the_kernels_send_queue_is_not_taken_yet() -> None:
    """Bytes in a TCP socket's send queue (not acknowledged by a peer whose receive buffer is
    full) are not counted as taken; once the peer reads them, they are."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(listener.getsockname())
    ours, _ = listener.accept()
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        cork = CorkedTransport(transport, loop)
        size = 4 << 20
        cork.write(b"z" * size)
        cork.flush()
        await asyncio.sleep(0.1)
        handed = cork.written - transport.get_write_buffer_size()
        assert handed > 0 and cork.sent() < handed // 2  # mostly queued, unread
        peer.setblocking(False)
        got = 0
        for _ in range(2000):
            try:
                got += len(peer.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.005)
            if got >= size:
                break
        assert got == size
        await asyncio.sleep(0.05)
        assert cork.sent() == size
        transport.close()
    finally:
        for s in (listener, peer, ours):
            s.close()


class RecordingTransport(BufferingTransport):
    """Keeps each buffer it is handed, as it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.writes.append([data])
        self.buffered += len(data)

    def writelines(self, lines: list[bytes]) -> None:
        self.writes.append(list(lines))
        self.buffered += sum(map(len, lines))


async def test_a_turns_small_writes_are_joined_and_a_large_body_is_not_copied() -> None:
    transport = RecordingTransport()
    cork = CorkedTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    head, small = b"HTTP/1.1 200 OK\r\n\r\n", b'{"choices": []}'
    cork.write(head)
    cork.write(small)
    cork.flush()
    assert transport.writes == [[head + small]]  # one buffer, one system call
    large = b"7" * (1 << 20)
    cork.write(head)
    cork.write(large)
    cork.flush()
    assert transport.writes[1] == [head, large] and transport.writes[1][1] is large
    assert cork.written == 2 * len(head) + len(small) + len(large) == transport.buffered
    cork.write(large)  # alone: as it is
    cork.flush()
    assert transport.writes[2][0] is large
