"""What every command shares: the --config option and loading settings with a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from gatehouse.config import ConfigError, Settings, load_settings
from gatehouse.timestamps import minute, utc

err = Console(stderr=True)
WIDEST = 10_000  # a table's own width is measured as if the screen were this wide
NARROWEST = 16  # columns a value needs beside its name; fewer, and it goes on the next line



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
    """What a ``list`` command prints: a table, or with ``--json`` one JSON array (times as
    ISO 8601, UTC). A value is never cut or broken across lines (ids and keys are what other
    commands take, and what people copy): a table wider than the terminal is printed as one
    block of ``column  value`` lines per row instead (as ``psql``'s expanded display), and
    into a pipe or a file the table keeps its own width, one line per row, for grep."""

    def __init__(self, *columns: str, times: tuple[str, ...] = (),
                 blanks: dict[str, str] | None = None) -> None:
        self.columns, self.times = columns, times
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
        cells = [[_cell(v, c in self.times, self.blanks.get(c, "—"))
                  for c, v in zip(self.columns, row, strict=True)] for row in self.rows]
        table = Table()
        for column in self.columns:
            table.add_column(Text(column), no_wrap=True)
        for row in cells:
            table.add_row(*row)
        # a console made now reads the terminal's width now (COLUMNS included), not at import
        console = Console()
        width = Measurement.get(console, console.options.update_width(WIDEST), table).maximum
        if width <= console.width:
            console.print(table)
        elif not console.is_terminal:
            Console(width=width).print(table)
        else:
            self._expanded(console, cells)

    def _expanded(self, console: Console, cells: list[list[Text]]) -> None:
        label = max(map(len, self.columns))
        beside = console.width >= 2 + label + 2 + NARROWEST  # else each value below its name
        for n, row in enumerate(cells):
            if n:
                console.print()
            console.print(row[0], style="bold", overflow="fold")
            if not beside:
                for column, value in zip(self.columns[1:], row[1:], strict=True):
                    console.print(Text("  " + column, style="dim", overflow="fold"))
                    console.print(Padding(value, (0, 0, 0, 4), expand=False))
                continue
            grid = Table.grid(padding=(0, 2))
            grid.add_column(width=label, no_wrap=True, style="dim")
            grid.add_column(overflow="fold")
            for column, value in zip(self.columns[1:], row[1:], strict=True):
                grid.add_row(Text(column), value)
            console.print(Padding(grid, (0, 0, 0, 2), expand=False))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any, is_time: bool, blank: str) -> Text:
    """A value as the table shows it: plain text, never read as Rich markup (``[red]`` and a
    trailing backslash are a name's own characters; markup escaping doubled the backslash)."""
    if value is None:
        return Text(blank)
    if is_time:
        return Text(minute(value))
    if isinstance(value, list | tuple):
        return Text(", ".join(map(str, value)) or "—")
    return Text(str(value))
