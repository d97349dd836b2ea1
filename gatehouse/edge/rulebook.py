"""Where the rules come from and when they are rebuilt: ``[[edge.rules]]`` first, then the
store's rules (``gatehouse rules add``) in position order, with list files read from disk.

The compiled :class:`RuleSet` is swapped in whole, so requests in flight keep the one they
started with and none is dropped while rules change. It is rebuilt when a replica hears of a
rule change (``edge.rules`` broadcast) and on SIGHUP; when a list file's mtime or size
changes (looked at every ``lists_check_seconds``); and when the store's rules read every
``rules_reload_seconds`` differ from those held — only then: compiling 10,000 rules is ~75 ms
of Python. The compile and the parsing of list files run on the event loop in turns
(:mod:`gatehouse.turns`), not in a thread: a thread holds the GIL in 5-ms turns, and the
requests around a change waited 50-90 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from gatehouse.config import ConfigError, EdgeSettings
from gatehouse.edge.matcher import RuleSet
from gatehouse.edge.rules import (
    LIST_CHUNK,
    LIST_STEP,
    ListParser,
    Range,
    Rule,
    RuleError,
    check_list,
    list_path,
    parse_rule,
    read_list,
)
from gatehouse.state.base import State, StateError
from gatehouse.store.edge import EdgeRecords
from gatehouse.turns import run_in_turns

log = logging.getLogger("gatehouse.edge")
CHANNEL = "edge.rules"


def config_rules(settings: EdgeSettings) -> list[Rule]:
    out = []
    for i, spec in enumerate(settings.rules):
        try:
            out.append(parse_rule(spec.written(), i))
        except RuleError as exc:
            raise ConfigError("", f"edge.rules.{i}", str(exc)) from None
    return out


def stored_rule(rule_id: str, spec: str | Mapping[str, Any]) -> Rule | None:
    """A store row's rule; a row that no longer parses is skipped with a warning."""
    try:
        data = orjson.loads(spec) if isinstance(spec, str) else dict(spec)
        return parse_rule(data, rule_id)
    except (RuleError, orjson.JSONDecodeError, TypeError) as exc:
        log.warning("stored rule %s is not usable and is skipped: %s", rule_id, exc)
        return None


async def read_list_in_turns(path: Path) -> list[Range]:
    """:func:`read_list` for a serving worker: each LIST_CHUNK read in a thread (the GIL is
    free while it waits on the disk), then parsed on the loop in turns."""
    parser = ListParser(path)
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            data = await asyncio.to_thread(handle.read, LIST_CHUNK)
            await run_in_turns(parser.feed(data))
            if not data:
                return parser.done()
    finally:
        handle.close()


class RuleBook:
    def __init__(self, settings: EdgeSettings, base_dir: Path, records: EdgeRecords | None,
                 on_compile: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.records = records
        self.fixed = config_rules(settings)
        self.stored: list[Rule] = []
        self._stored_rows: tuple[tuple[str, str], ...] = ()  # what self.stored was made of
        self.lists: dict[str, list[Range]] = {}
        self._seen: dict[str, tuple[float, int]] = {}
        self.current = RuleSet(self.fixed, {})
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop_obj: asyncio.AbstractEventLoop | None = None
        self.rebuilt = 0
        self.on_compile = on_compile

    def path_of(self, name: str) -> Path:
        return list_path(self.base_dir, name)

    def _unreadable(self, name: str, path: Path, exc: Exception, *, strict: bool) -> None:
        """A list file that cannot be read keeps its last contents (ConfigError if
        ``strict``: a configuration naming a missing file fails at start, not later)."""
        reason = getattr(exc, "strerror", None) or exc
        if strict:
            raise ConfigError("", "edge.rules", f"list file {path}: {reason}") from None
        if name not in self.lists:
            self.lists[name] = []
        log.warning("list file %s cannot be read (%s); keeping its last contents", path, reason)

    def _changed_lists(self, rules: Sequence[Rule], *, strict: bool
                       ) -> list[tuple[str, Path, tuple[float, int]]]:
        """The list files the rules name whose mtime or size changed since they were read."""
        changed = []
        for name in {r.list_file for r in rules if r.list_file}:
            path = self.path_of(name)
            try:
                st = path.stat()
                if stat.S_ISDIR(st.st_mode):  # the system's own words, as open() would say
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block its reader for ever
                    raise OSError(0, "not a regular file")
            except (OSError, ValueError) as exc:  # ValueError: a path no system can open
                self._unreadable(name, path, exc, strict=strict)
                continue
            mark = (st.st_mtime, st.st_size)
            if self._seen.get(name) != mark or name not in self.lists:
                changed.append((name, path, mark))
        return changed

    def _put_list(self, name: str, path: Path, mark: tuple[float, int], nets: list[Range]
                  ) -> Iterator[None]:
        """Put a list's new contents in place of the last, which is freed a piece at a time
        (at once: ~4 ms for 100,000 ranges). Nothing else holds that list: a rule set being
        built copies it in one step."""
        old = self.lists.get(name)
        self.lists[name] = nets
        self._seen[name] = mark
        log.info("list %s: %d networks", path, len(nets))
        while old:
            del old[-LIST_STEP * 4:]
            yield

    def _read_lists(self, rules: Sequence[Rule], *, strict: bool) -> bool:
        """Read list files that changed, at once (at start); True when any did."""
        changed = False
        for name, path, mark in self._changed_lists(rules, strict=strict):
            try:
                nets = read_list(path)
            except (OSError, ValueError) as exc:
                self._unreadable(name, path, exc, strict=strict)
                continue
            for _ in self._put_list(name, path, mark, nets):
                pass
            changed = True
        return changed

    async def _read_lists_in_turns(self, rules: Sequence[Rule]) -> bool:
        """The same while serving: each file is read in a thread LIST_CHUNK bytes at a time
        (the GIL is free while it waits on the disk) and parsed on the loop in turns, as the
        rule set is compiled (100,000 lines: ~0.2 s of Python)."""
        changed = False
        for name, path, mark in await asyncio.to_thread(self._changed_lists, rules,
                                                        strict=False):
            try:
                nets = await read_list_in_turns(path)
            except (OSError, ValueError) as exc:
                self._unreadable(name, path, exc, strict=False)
                continue
            await run_in_turns(self._put_list(name, path, mark, nets))
            changed = True
        return changed

    async def _compile(self) -> None:
        rules = [*self.fixed, *self.stored]
        # on the loop, a slice at a time: the requests meanwhile use the rule set before
        self.current = await RuleSet.compile(rules, self.lists)
        self.rebuilt += 1
        if self.on_compile is not None:
            self.on_compile(len(rules))

    async def load_stored(self) -> bool:
        """Read the store's rules; True when they differ from those held."""
        if self.records is None:
            return False
        rows = await self.records.rules()
        seen = tuple((row.id, row.spec) for row in rows)  # in position order: order counts
        if seen == self._stored_rows:
            return False
        self._stored_rows = seen
        self.stored = [r for row in rows if (r := stored_rule(row.id, row.spec)) is not None]
        return True

    async def reload(self, *, stored: bool = True, always: bool = False) -> None:
        """Read the store's rules and changed list files, then swap in a new rule set — if
        either changed, or ``always`` (a broadcast change, SIGHUP)."""
        changed = await self.load_stored() if stored else False
        rules = [*self.fixed, *self.stored]
        changed |= await self._read_lists_in_turns(rules)
        if changed or always:
            await self._compile()

    def read_config_lists(self) -> None:
        """Read the list files the configuration's rules name; ConfigError for one that
        cannot be read (a config naming a missing file fails at start, not later)."""
        self._read_lists(self.fixed, strict=True)

    async def start(self, state: State | None) -> None:
        self.read_config_lists()
        try:
            await self.load_stored()
        except Exception as exc:  # the store is down: config rules still apply
            log.warning("could not load stored rules: %s", type(exc).__name__)
        self._read_lists([*self.fixed, *self.stored], strict=False)
        await self._compile()
        if state is not None:
            state.subscribe(CHANNEL, lambda _message: self._dirty.set())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # main thread only (uvicorn's worker loop is); elsewhere lists reload by mtime
            loop.add_signal_handler(signal.SIGHUP, self._dirty.set)
            self._loop_obj = loop
        self._task = loop.create_task(self._watch())

    async def _watch(self) -> None:
        every = self.settings.lists_check_seconds
        since_store = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._dirty.wait()
            since_store += every
            try:
                if self._dirty.is_set() or since_store >= self.settings.rules_reload_seconds:
                    dirty = self._dirty.is_set()
                    self._dirty.clear()
                    since_store = 0.0
                    await self.reload(always=dirty)
                else:  # list files only
                    await self.reload(stored=False)
            except Exception as exc:  # keep serving with the last good rule set
                log.warning("could not reload edge rules: %s: %s", type(exc).__name__, exc)

    async def aclose(self) -> None:
        if self._loop_obj is not None:
            with contextlib.suppress(Exception):
                self._loop_obj.remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class RuleAdmin:
    """Listing and changing rules, for the admin API and the CLI alike."""

    def __init__(self, settings: EdgeSettings, records: EdgeRecords, state: State,
                 base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir  # where relative list files are (the config file's folder)
        self.fixed = config_rules(settings)
        self.records = records
        self.state = state

    async def rows(self) -> Iterator[dict[str, Any]]:
        """Every rule in the order they are tried — the config file's, then the store's — each
        made as it is taken (10,000 at once: ~30 ms on the loop, so an API answer takes them
        in turns)."""
        return self._rows(await self.records.rules())

    def _rows(self, stored: Sequence[Any]) -> Iterator[dict[str, Any]]:
        for i, (rule, spec) in enumerate(zip(self.fixed, self.settings.rules, strict=True)):
            yield {"id": rule.label, "source": "config", "position": i, "note": "",
                   "created_at": None, "rule": spec.written()}
        for row in stored:
            yield {"id": row.id, "source": "store", "position": row.position,
                   "note": row.note, "created_at": row.created_at,
                   "rule": orjson.loads(row.spec)}

    async def listing(self) -> list[dict[str, Any]]:
        return list(await self.rows())

    async def add(self, spec: Mapping[str, Any], note: str = "",
                  position: int | None = None) -> dict[str, Any]:
        """Check and store a rule, then tell every replica (RuleError when it is unusable)."""
        clean = {k: v for k, v in spec.items() if v is not None}
        parse_rule(clean, "new")
        if clean.get("list"):  # read off the loop: a list may be megabytes
            await asyncio.to_thread(check_list, list_path(self.base_dir, clean["list"]))
        row = await self.records.add_rule(clean, note, position)
        await announce(self.state)
        return {"id": row.id, "source": "store", "position": row.position, "note": row.note,
                "created_at": row.created_at, "rule": clean}

    async def remove(self, rule_id: str) -> bool:
        removed = await self.records.remove_rule(rule_id)
        if removed:
            await announce(self.state)
        return removed


async def announce(state: State) -> None:
    """Tell every replica to reload the store's rules."""
    try:
        await state.publish(CHANNEL, b"changed")
    except StateError as exc:
        log.warning("could not announce a rule change (%s); replicas reload within their "
                    "rules_reload_seconds", exc)
