"""Imported before the gateway by ``bench/memory.py --malloc-stats``: on SIGUSR2 the worker
writes to its stderr what each allocator holds — CPython's (``sys._debugmallocstats``:
pymalloc's arenas, pools and blocks by size class), glibc's (``mallinfo2``: its heap, in use
and free, and its mmapped chunks) and SQLite's (``sqlite3_memory_used``) — so a change in RSS
can be put down to one of them. No tracing: RSS stays comparable. Nothing in the gateway
changes."""

from __future__ import annotations

import ctypes
import signal
import sys
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def glibc() -> str:
    """glibc malloc's own figures (mallinfo2, glibc >= 2.33): what it took with brk and mmap,
    what of it is in use and what is free (held, not returned)."""
    try:
        call = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return "glibc malloc: mallinfo2 not available"
    call.restype = _MallInfo2
    info = call()
    mb = 1e6
    return (f"glibc malloc: heap {info.arena / mb:.2f} MB (in use {info.uordblks / mb:.2f}, "
            f"free {info.fordblks / mb:.2f}, top releasable {info.keepcost / mb:.2f}), "
            f"mmapped {info.hblkhd / mb:.2f} MB in {info.hblks} chunks")


def sqlite() -> str:
    """What SQLite holds (page caches, prepared statements, lookaside), from the library
    Python's sqlite3 module loaded."""
    import sqlite3  # noqa: F401  (loads the library, if the store has not yet)

    maps = Path("/proc/self/maps").read_text().splitlines()
    found = [line.split()[-1] for line in maps if "libsqlite3" in line]
    try:
        lib = ctypes.CDLL(found[0] if found else "libsqlite3.so.0")
        used, high = lib.sqlite3_memory_used, lib.sqlite3_memory_highwater
    except (OSError, AttributeError):
        return "sqlite: not available"
    used.restype = high.restype = ctypes.c_int64
    high.argtypes = [ctypes.c_int]
    return f"sqlite: {used() / 1e6:.2f} MB in use (at most {high(0) / 1e6:.2f})"


def _stats(*_: Any) -> None:
    sys.stderr.flush()
    sys._debugmallocstats()
    print(glibc(), file=sys.stderr, flush=True)
    print(sqlite(), file=sys.stderr, flush=True)


signal.signal(signal.SIGUSR2, _stats)


def serve(argv: list[str]) -> None:
    """Run the serving process here (bench/_serve_here.py)."""
    from _serve_here import serve as serve_here

    serve_here(argv)
