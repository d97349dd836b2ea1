"""Imported before the gateway by bench/tail.py: a heartbeat on the worker's event loop, every
1 ms, that notes how late it ran (the loop's lag: how long anything else held it); on SIGUSR2
writes the late beats (> 0.5 ms, wall clock time and lateness in ms; at most ``MAX_NOTED``) and
the number of beats to $LOOP_LAG_REPORT as JSON. No thread, no sampling: a beat is one callback
of a few µs a millisecond. Nothing in the gateway changes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

PERIOD = 0.001
MAX_NOTED = 200_000
_late: list[tuple[float, float]] = []
_beats = [0]


def _report(*_: Any) -> None:
    Path(os.environ["LOOP_LAG_REPORT"]).write_text(
        json.dumps({"beats": _beats[0], "late": _late}))


def _with_heartbeat() -> Any:
    loop = _new_event_loop()
    due = [time.perf_counter() + PERIOD]

    def beat() -> None:
        now = time.perf_counter()
        late = now - due[0]
        _beats[0] += 1
        if late > 0.0005 and len(_late) < MAX_NOTED:
            _late.append((round(time.time(), 4), round(late * 1e3, 3)))
        due[0] = now + PERIOD
        loop.call_later(PERIOD, beat)

    loop.call_later(PERIOD, beat)
    return loop


_new_event_loop = uvloop.new_event_loop
# uvicorn asks uvloop for a loop when it starts (uvicorn/loops/uvloop.py looks it up then)
uvloop.new_event_loop = _with_heartbeat
signal.signal(signal.SIGUSR2, _report)


def serve(argv: list[str]) -> None:
    """Run the serving process here, with the heartbeat (bench/_serve_here.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _serve_here import serve as serve_here

    serve_here(argv)
