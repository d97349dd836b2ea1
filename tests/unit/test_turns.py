"""gatehouse/turns.py's thread in short turns: while work that cannot be cut runs in a
thread, the GIL changes hands every GIL_TURN_SECONDS; the usual interval comes back when the
last such work ends, whatever it raised."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from gatehouse.turns import GIL_TURN_SECONDS, to_thread_in_turns


async def test_work_in_a_thread_runs_with_short_gil_turns_and_the_interval_comes_back() -> None:
    usual = sys.getswitchinterval()
    seen: list[tuple[float, bool]] = []

    def work() -> str:
        seen.append((sys.getswitchinterval(), threading.current_thread() is
                     threading.main_thread()))
        return "built"

    assert await to_thread_in_turns(work) == "built"
    assert seen == [(GIL_TURN_SECONDS, False)]
    assert sys.getswitchinterval() == usual


async def test_overlapping_work_keeps_short_turns_until_the_last_ends() -> None:
    usual = sys.getswitchinterval()
    first_may_end = threading.Event()
    running = asyncio.ensure_future(to_thread_in_turns(lambda: first_may_end.wait(10)))
    await asyncio.sleep(0)  # the first is under way
    assert await to_thread_in_turns(lambda: "quick") == "quick"  # began and ended meanwhile
    assert sys.getswitchinterval() == GIL_TURN_SECONDS  # the first still runs: short turns kept
    first_may_end.set()
    assert await running is True
    assert sys.getswitchinterval() == usual


async def test_work_that_fails_gives_the_usual_interval_back() -> None:
    usual = sys.getswitchinterval()

    def broken() -> None:
        raise RuntimeError("no app")

    with pytest.raises(RuntimeError, match="no app"):
        await to_thread_in_turns(broken)
    assert sys.getswitchinterval() == usual


async def test_loop_turns_set_to_nothing_leave_the_thread_turns_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests make every item of a loop's work a turn of its own (TURN_SECONDS = 0); the GIL's
    interval has its own setting (0 is no interval the interpreter takes)."""
    from gatehouse import turns

    monkeypatch.setattr(turns, "TURN_SECONDS", 0.0)
    assert await to_thread_in_turns(sys.getswitchinterval) == GIL_TURN_SECONDS
