"""What every command shares: the --config option and loading settings with a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gatehouse.config import ConfigError, Settings, load_settings
from gatehouse.timestamps import minute, utc

err = Console(stderr=True)



def config_failed(exc: ConfigError) -> NoReturn:
    """Print every problem, exactly as written (``[upstreams.x]`` is not Rich markup), and
    exit 2."""
    for line in str(exc).splitlines():
        err.print(Text.assemble(("configuration error ", "bold red"), line), soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def store_errors(settings: Settings) -> Iterator[None]:
    """A store that cannot be reached or used (PostgreSQL down, a wrong password, a SQLite
    file that is not a database, a store in a read-only directory) is said in one line and
    exit status 1, not a traceback."""
    from gatehouse.store.db import STORE_ERRORS, unusable

    try:
        yield
    except STORE_ERRORS as exc:
        said = unusable(settings.storage.database_url, exc)
        if said is None:  # a file's error (a read-only directory, the secret): it names it
            assert isinstance(exc, OSError)
            said = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        err.print(Text.assemble(("error ", "bold red"), said), soft_wrap=True)
        raise typer.Exit(1) from None


def at_most(limit: int, what: str) -> Callable[[Any], Any]:
    """A parameter's callback refusing a value (or a repeated option's value) longer than
    ``limit`` characters — the bound the store and the admin API set — by its length: a
    5,000-character name was echoed whole in the answer."""
    def check(value: Any) -> Any:
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, str) and len(one) > limit:
                raise typer.BadParameter(f"{what} is at most {limit} characters; this one "
                                         f"has {len(one)}")
        return value
    return check


def load_for_cli(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        config_failed(exc)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON array of objects instead "
                                                      "of a table.")]


class Listing:
    """What a ``list`` command prints: a table whose ids are never cut (they are what other
    commands take), or with ``--json`` one JSON array (times as ISO 8601, UTC)."""

    def __init__(self, *columns: str, ids: tuple[str, ...] = ("id",),
                 times: tuple[str, ...] = (), blanks: dict[str, str] | None = None) -> None:
        self.columns, self.ids, self.times = columns, ids, times
        self.blanks = blanks or {}  # what the table shows for a column's None (JSON: null)
        self.rows: list[tuple[Any, ...]] = []

    def add(self, *values: Any) -> None:
        self.rows.append(values)

    def print(self, as_json: bool) -> None:
        if as_json:
            typer.echo(json.dumps([
                {c.replace(" ", "_"): (_iso(v) if c in self.times else v)
                 for c, v in zip(self.columns, row, strict=True)} for row in self.rows],
                indent=2, ensure_ascii=False))
            return
        table = Table()
        for column in self.columns:
            if column in self.ids:
                table.add_column(column, no_wrap=True, min_width=1, overflow="fold")
            else:
                table.add_column(column, overflow="fold")
        for row in self.rows:
            table.add_row(*(_cell(v, c in self.times, self.blanks.get(c, "—"))
                            for c, v in zip(self.columns, row, strict=True)))
        # a console made now reads the terminal's width now (COLUMNS included), not at import
        Console().print(table)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any, is_time: bool, blank: str) -> str:
    if value is None:
        return escape(blank)
    if is_time:
        return minute(value)
    if isinstance(value, list | tuple):
        return escape(", ".join(map(str, value))) or "—"
    return escape(str(value))
