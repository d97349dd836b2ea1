"""Imported before the gateway by bench/memory.py --tracemalloc: traces the Python heap from
the start ($MEMORY_FRAMES frames, 1 by default) and, on SIGUSR1, collects garbage and writes
the top allocators (by line, and by file), the modules loaded (per top-level package, and
each with its file) and the collector's counts to $MEMORY_REPORT as JSON; with
$MEMORY_SNAPSHOT set, the whole snapshot to that file too (``tracemalloc.Snapshot.load``:
with many frames, what each import or call of the gateway's allocated). Nothing in the
gateway changes."""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from typing import Any

tracemalloc.start(int(os.environ.get("MEMORY_FRAMES", "1")))


def _report(*_: Any) -> None:
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),))
    by_line = snap.statistics("lineno")
    by_file = snap.statistics("filename")
    traced, _peak = tracemalloc.get_traced_memory()
    if os.environ.get("MEMORY_SNAPSHOT"):  # the whole snapshot, for tracemalloc's own tools
        snap.dump(os.environ["MEMORY_SNAPSHOT"])
    packages = collections.Counter(name.partition(".")[0] for name in list(sys.modules))
    with open(os.environ["MEMORY_REPORT"], "w") as out:
        json.dump({"traced_mb": traced / 1e6, "modules": len(sys.modules),
                   "gc": gc.get_stats(),
                   "packages": packages.most_common(40),
                   "module_files": sorted((name, getattr(module, "__file__", None) or "")
                                          for name, module in list(sys.modules.items())),
                   "lines": [(str(s.traceback[0]), s.size / 1e6, s.count) for s in by_line[:40]],
                   "files": [(s.traceback[0].filename, s.size / 1e6, s.count)
                             for s in by_file[:40]]}, out, indent=1)


signal.signal(signal.SIGUSR1, _report)


def serve(argv: list[str]) -> None:
    """Run the serving process here, traced (bench/_serve_here.py)."""
    from _serve_here import serve as serve_here

    serve_here(argv)
