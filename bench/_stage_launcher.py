"""Runs the gateway as ``gatehouse serve`` does (its serving module, in this process) with a clock around each pipeline stage
(used by bench/stages.py).

Nothing in the gateway changes: this wrapper only replaces, on each stage object the pipeline
is built with, ``enter`` and ``exit`` by timed forwards, and the server's request handler by a
timed forward; on SIGUSR1 it writes what it measured to $STAGE_REPORT (JSON: per name, the
durations in µs) and starts again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import defaultdict
from typing import Any

_times: dict[str, list[float]] = defaultdict(list)
_CAP = 200_000  # per name: bounded


def _timed(name: str, fn: Any) -> Any:
    clock = time.perf_counter
    out = _times[name]

    async def forward(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return await fn(*args, **kwargs)
        finally:
            if len(out) < _CAP:
                out.append((clock() - t) * 1e6)
    return forward


def _timed_sync(name: str, fn: Any) -> Any:
    clock = time.perf_counter
    out = _times[name]

    def forward(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            if len(out) < _CAP:
                out.append((clock() - t) * 1e6)
    return forward


def _wrap_named(spec: str) -> None:
    """$STAGE_FUNCS: ``module:name,module:Class.name,…`` — functions (sync or async) timed
    too, as the module (or class) holds them, so callers in that module see the wrapper."""
    import importlib
    import inspect

    for item in filter(None, spec.split(",")):
        module_name, _, path = item.partition(":")
        owner: Any = importlib.import_module(module_name)
        *outer, attr = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        fn = getattr(owner, attr)
        wrap = _timed if inspect.iscoroutinefunction(fn) else _timed_sync
        setattr(owner, attr, wrap(path, fn))


def _report(*_: Any) -> None:
    path = os.environ["STAGE_REPORT"]
    with open(path + ".part", "w") as f:
        json.dump(_times, f)
    os.replace(path + ".part", path)  # whole, or not there
    for v in _times.values():
        v.clear()


def _install() -> None:
    from gatehouse import pipeline, server

    init = pipeline.Pipeline.__init__

    def timed_init(self: Any, stages: Any) -> None:
        init(self, stages)
        for stage in self.stages:  # once each: pipelines (one per route kind) share stages
            if getattr(stage, "_stage_timed", False):
                continue
            stage.enter = _timed(f"{stage.name}.enter", stage.enter)
            stage.exit = _timed(f"{stage.name}.exit", stage.exit)
            stage._stage_timed = True

    pipeline.Pipeline.__init__ = timed_init  # type: ignore[method-assign]
    handle = pipeline.Pipeline.handle

    async def timed_handle(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await handle(self, *args, **kwargs)
        finally:
            _times["pipeline.handle"].append((time.perf_counter() - t) * 1e6)

    pipeline.Pipeline.handle = timed_handle  # type: ignore[method-assign]
    call = server.Gateway.__call__

    async def timed_call(self: Any, scope: Any, receive: Any, send: Any) -> Any:
        t = time.perf_counter()
        try:
            return await call(self, scope, receive, send)
        finally:
            if scope.get("type") == "http" and len(_times["gateway.call"]) < _CAP:
                _times["gateway.call"].append((time.perf_counter() - t) * 1e6)

    server.Gateway.__call__ = timed_call  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _report)
    _wrap_named(os.environ.get("STAGE_FUNCS", ""))


if __name__ == "__main__":
    _install()
    # `gatehouse serve` execs the serving module, which would lose these hooks: the options
    # come in the environment (serve.options_environment) and its main runs here
    # (run as overhead.start_gatehouse's ``launch``: ``serve --config C --host H --port P``)
    from gatehouse.cli.serve import options_environment
    from gatehouse.cli.serving import main

    given = dict(zip(sys.argv[2::2], sys.argv[3::2], strict=False))
    os.environ.update(options_environment(given.get("--config"), given.get("--host"),
                                          given.get("--port"), given.get("--workers")))
    sys.argv = [sys.argv[0]]
    main()
