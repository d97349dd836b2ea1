"""A ``list`` command's table at any width (cli/common.py's Listing), run as a person runs it:
the real ``gatehouse`` in a pseudo-terminal of 80 columns, in a wide one, and into a pipe.
Before, an 80-column terminal wrapped every column into a few characters a line ("gh-a / dmin
/ -kQX / 9…An / U0"): no key id or key could be read or copied."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KEY_ID = re.compile(r"key_[0-9a-f]{16}")


def gatehouse(config: Path, *args: str, columns: int, terminal: bool) -> str:
    """What ``gatehouse ARGS`` shows (escape sequences dropped), on a terminal of ``columns``
    or into a pipe."""
    cmd = [sys.executable, "-m", "gatehouse", *args, "--config", str(config)]
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50"}
    env.pop("NO_COLOR", None)
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60,
                              check=True, cwd=config.parent)
        return done.stdout
    main, child = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=child, stderr=child, stdin=subprocess.DEVNULL, env=env,
                            cwd=config.parent)
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child's side closed
            break
        if not data:
            break
        out += data
    os.close(main)
    assert proc.wait(timeout=60) == 0, out
    return ANSI.sub("", out.decode()).replace("\r\n", "\n")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store with three keys (one with a long name), and the keys' displays."""
    cli_config = tmp_path_factory.mktemp("listing") / "gatehouse.toml"
    cli_config.write_text('[storage]\ndatabase_url = "sqlite+aiosqlite:///gh.db"\n'
                          '[identity]\nsecret_file = "secret"\n')

    def run(*args: str) -> str:
        return gatehouse(cli_config, *args, columns=200, terminal=False)

    run("orgs", "create", "acme")
    run("projects", "create", "acme/support-bot")
    for name in ("ci", "a key named at some length for the nightly evaluation runs", "laptop"):
        run("keys", "create", "acme/support-bot", "--name", name)
    shown = [k["key"] for k in json.loads(run("keys", "list", "--json"))]
    return cli_config, shown


def test_on_a_narrow_terminal_each_key_is_a_block_and_nothing_is_cut(
        keys: tuple[Path, list[str]]) -> None:
    config, shown = keys
    out = gatehouse(config, "keys", "list", columns=80, terminal=True)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, out
    assert len(KEY_ID.findall(out)) == 3 and all(k in out for k in shown), out
    assert sum(line.split() == ["status", "active"] for line in lines) == 3, out
    # the long name folds inside its block; its words are all there, in order
    assert "nightly evaluation runs" in " ".join(out.split()), out


def test_on_a_very_narrow_terminal_no_value_is_lost(keys: tuple[Path, list[str]]) -> None:
    """12 columns: too few for a value beside its name, so each goes below it (a name as
    wide as the terminal once swallowed its value whole)."""
    config, shown = keys
    out = gatehouse(config, "keys", "list", columns=12, terminal=True)
    assert max(map(len, out.splitlines())) <= 12, out
    joined = "".join(out.split())  # (a value folded across lines is whole again)
    assert len(KEY_ID.findall(joined)) == 3 and all(k in joined for k in shown), out
    assert joined.count("acme/support-bot") == 3, out


def test_on_a_wide_terminal_it_is_a_table_one_row_a_line(keys: tuple[Path, list[str]]) -> None:
    config, shown = keys
    out = gatehouse(config, "keys", "list", columns=220, terminal=True)
    rows = [line for line in out.splitlines() if KEY_ID.search(line)]
    assert len(rows) == 3 and all(any(k in row for row in rows) for k in shown), out
    assert all(row.startswith("│") and row.rstrip().endswith("│") for row in rows), out


def test_into_a_pipe_each_row_is_one_line_whatever_the_width(
        keys: tuple[Path, list[str]]) -> None:
    config, shown = keys
    out = gatehouse(config, "keys", "list", columns=80, terminal=False)
    rows = [line for line in out.splitlines() if KEY_ID.search(line)]
    assert len(rows) == 3, out
    for row in rows:  # grep finds a key's whole row
        assert "acme/support-bot" in row and "active" in row and any(k in row for k in shown)


ODD_NAME = "[bold red]boom[/] \\"


@pytest.fixture(scope="module")
def odd_name(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one key named like Rich markup, ending in a backslash."""
    config = tmp_path_factory.mktemp("odd-name") / "gatehouse.toml"
    config.write_text('[storage]\ndatabase_url = "sqlite+aiosqlite:///gh.db"\n'
                      '[identity]\nsecret_file = "secret"\n')
    for args in (("orgs", "create", "acme"), ("projects", "create", "acme/bot"),
                 ("keys", "create", "acme/bot", "--name", ODD_NAME)):
        gatehouse(config, *args, columns=200, terminal=False)
    return config


@pytest.mark.parametrize(("columns", "terminal"), [(220, True), (80, True), (12, True),
                                                   (80, False)])
def test_a_name_is_shown_as_written_never_as_markup(odd_name: Path, columns: int,
                                                    terminal: bool) -> None:
    """A key named ``[bold red]boom[/] \\`` was shown with its trailing backslash doubled
    (Rich's markup escaping adds one so that the text cannot escape a tag after it; in a cell
    alone, both were printed). Cells are plain text now, in the table, the blocks and the
    pipe."""
    out = gatehouse(odd_name, "keys", "list", columns=columns, terminal=terminal)
    if columns < 20:  # folded across lines: compare without the breaks
        assert "".join(ODD_NAME.split()) in "".join(out.split()), out
    else:
        assert ODD_NAME in out, out
    assert "\\\\" not in out, out
