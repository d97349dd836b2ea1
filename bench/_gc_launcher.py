"""Runs the gateway as ``gatehouse serve`` does (its serving module, in this process) with garbage-collector instrumentation (used by gc_check.py).

Nothing in the gateway changes: this wrapper only adds, in the gateway's own process,

* a gc callback that appends ``generation duration_ms`` per collection to $GC_LOG;
* SIGUSR1: collect, then keep all cyclic garbage (gc.DEBUG_SAVEALL) from now on;
* SIGUSR2: collect and write the kept garbage's type counts and one reference cycle
  through a RequestContext to $GC_REPORT (JSON).
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import time
from typing import Any

_started: dict[str, float] = {}
_log = open(os.environ["GC_LOG"], "w", buffering=1) if os.environ.get("GC_LOG") else None  # noqa: SIM115


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started["t"] = time.perf_counter()
    elif _log is not None and "t" in _started:
        _log.write(f"{info['generation']} {(time.perf_counter() - _started['t']) * 1e3:.3f}\n")


def _describe(o: Any) -> str:
    kind = type(o).__name__
    if kind == "frame":
        return f"frame {o.f_code.co_name} ({o.f_code.co_filename}:{o.f_lineno})"
    if kind == "cell":
        try:
            return f"cell -> {type(o.cell_contents).__name__}"
        except ValueError:
            return "cell (empty)"
    if kind == "function":
        return f"function {o.__qualname__} ({o.__code__.co_filename})"
    if kind == "dict":
        return f"dict with keys {list(o)[:8]}"
    return f"{type(o).__module__}.{type(o).__qualname__}"


def _cycle_through(start: Any, members: set[int]) -> list[str]:
    """Shortest reference path start -> ... -> start among the garbage."""
    prev: dict[int, int | None] = {id(start): None}
    objs = {id(start): start}
    todo = collections.deque([start])
    last = None
    while todo and last is None:
        o = todo.popleft()
        for r in gc.get_referents(o):
            if r is start:
                last = o
                break
            if id(r) in members and id(r) not in prev:
                prev[id(r)] = id(o)
                objs[id(r)] = r
                todo.append(r)
    path: list[str] = []
    k = id(last) if last is not None else None
    while k is not None:
        path.append(_describe(objs[k]))
        k = prev[k]
    return list(reversed(path))


def _start_saving(*_: Any) -> None:
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)


def _report(*_: Any) -> None:
    gc.collect()
    gc.set_debug(0)
    garbage = list(gc.garbage)
    gc.garbage.clear()
    types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
    cycle: list[str] = []
    members = {id(o) for o in garbage}
    for o in garbage:
        if type(o).__name__ == "RequestContext":
            cycle = _cycle_through(o, members)
            break
    with open(os.environ["GC_REPORT"], "w") as out:
        json.dump({"objects": len(garbage), "types": types.most_common(20), "cycle": cycle}, out)
    del garbage


if __name__ == "__main__":
    gc.callbacks.append(_on_gc)
    signal.signal(signal.SIGUSR1, _start_saving)
    signal.signal(signal.SIGUSR2, _report)
    # `gatehouse serve` execs the serving module, which would lose these hooks: the options
    # come in the environment (gc_check.py: serve.options_environment) and the serving
    # module's main runs here, without the exec
    from gatehouse.cli.serving import main

    sys.argv = [sys.argv[0]]
    main()
