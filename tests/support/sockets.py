"""Which process holds which TCP socket of a port, read from /proc (Linux)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"


def _inodes(port: int, state: str) -> set[str]:
    """Inodes of this machine's TCP sockets in ``state`` whose local port is ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def listening(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port``, whoever holds them."""
    return _inodes(port, LISTEN)


def holders(pids: list[int], port: int, state: str) -> dict[int, set[str]]:
    """For each of ``pids``, the inodes of its sockets on ``port`` in ``state``."""
    wanted = _inodes(port, state)
    out: dict[int, set[str]] = {}
    for pid in pids:
        held: set[str] = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in wanted:
                    held.add(link[8:-1])
        except OSError:
            pass
        out[pid] = held
    return out


def connections_per_process(pids: list[int], port: int) -> Counter[int]:
    return Counter({pid: len(held) for pid, held in holders(pids, port, ESTABLISHED).items()})


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out
