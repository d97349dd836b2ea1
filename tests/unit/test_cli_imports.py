"""The CLI imports only what a command needs: ``gatehouse version`` and ``--help`` load none
of the store, the server, the password hasher, Rich's tables, the doctor's TLS code or pydantic;
``gatehouse keys list`` loads the store's account tables only, and none of the server, the admin
API, the password hasher, Alembic or the HTTP clients (checked in a fresh interpreter's
``sys.modules``, not with a clock). The top-level help is drawn from gatehouse/cli/main.py's
table, which must say what each command itself says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatehouse.cli.main import COMMANDS, app, load_command

HEAVY = ("fastapi", "sqlalchemy", "argon2", "rich.table", "cryptography", "httpx", "aiohttp",
         "uvicorn", "gatehouse.app", "gatehouse.config", "pydantic")
# what `keys list` (on a SQLite store, state memory://) has no use for: the server and the
# admin API, the password hasher, migrations (the store is at head), the other store tables,
# the HTTP clients, Redis and PostgreSQL drivers, the doctor, the tokenizers
NOT_FOR_KEYS_LIST = ("fastapi", "starlette", "uvicorn", "argon2", "alembic", "mako", "httpx",
                     "aiohttp", "redis", "asyncpg", "cryptography", "jinja2", "ctypes",
                     "gatehouse.app", "gatehouse.server", "gatehouse.admin", "gatehouse.doctor",
                     "gatehouse.store.tables", "gatehouse.identity.passwords", "quicktok",
                     "tokenizers")
ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, runpy, sys
sys.argv = ["gatehouse", *json.loads(sys.argv[1])]
try:
    runpy.run_module("gatehouse", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def modules_after(*args: str, cwd: Path | None = None) -> tuple[str, set[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    env.pop("GATEHOUSE_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return done.stdout, set(report["modules"])


@pytest.mark.parametrize("args", [("version",), ("--help",)])
def test_version_and_help_import_nothing_heavy(args: tuple[str, ...]) -> None:
    out, modules = modules_after(*args)
    loaded = [m for m in HEAVY if m in modules]
    assert loaded == [], f"gatehouse {' '.join(args)} imported {loaded}"
    if args == ("version",):
        assert out.strip() == __import__("gatehouse").__version__
    else:  # every command listed, with its help
        for name, (_, _, short) in COMMANDS.items():
            assert name in out and short.split()[0] in out


def test_keys_list_imports_the_account_tables_and_nothing_it_does_not_use(
        tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.toml"
    modules_after("init", "--config", str(config), cwd=tmp_path)
    out, modules = modules_after("keys", "list", "--json", "--config", str(config), cwd=tmp_path)
    listed = json.loads(out)
    assert sorted(k["project"] or "(admin)" for k in listed) == ["(admin)", "default/demo"]
    # what it does use, so that the probe is known to have run the command
    for needed in ("sqlalchemy.ext.asyncio", "sqlalchemy.dialects.sqlite.aiosqlite",
                   "gatehouse.store.account_tables", "gatehouse.store.accounts",
                   "gatehouse.config"):
        assert needed in modules, needed
    assert unwanted(modules) == [], f"gatehouse keys list --json imported {unwanted(modules)}"
    _, table = modules_after("keys", "list", "--config", str(config), cwd=tmp_path)
    assert "rich.table" in table
    assert unwanted(table) == [], f"gatehouse keys list imported {unwanted(table)}"


def unwanted(modules: set[str]) -> list[str]:
    return sorted(m for m in modules
                  if any(m == h or m.startswith(h + ".") for h in NOT_FOR_KEYS_LIST))


def test_the_help_table_says_what_each_command_says() -> None:
    """The one-line helps in main.py's table are the commands' own (no drift)."""
    for name, (_, _, short) in COMMANDS.items():
        command = load_command(name)
        assert command.get_short_help_str(limit=300) == short, name


def test_a_loaded_command_runs_through_the_group() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["check", "--config", "/nonexistent/gatehouse.toml"])
    assert result.exit_code == 2 and "configuration error" in result.output
    result = CliRunner().invoke(app, ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_serve_becomes_a_process_without_the_cli(tmp_path: Path) -> None:
    """``gatehouse serve`` reads its options, without loading the settings, then execs the
    serving process (same pid), which imports neither Typer nor Rich — nor Alembic on a
    store at head. Each interpreter
    prints its imports (PYTHONPROFILEIMPORTTIME), headed by a line of its own."""
    import socket

    from tests.unit.test_serving import serving

    config = tmp_path / "gatehouse.toml"
    modules_after("init", "--config", str(config), cwd=tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPROFILEIMPORTTIME="1")
    env.pop("GATEHOUSE_CONFIG", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gatehouse", "serve", "--config",
                                 str(config), "--port", str(port)], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        serving(proc, log, port)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
            assert b"gatehouse.cli.serving" in cmdline.read()  # the same pid, exec'd
    finally:
        proc.terminate()
        proc.wait(30)
    parts = log.read_text().split("import time: self [us] | cumulative | imported package")
    assert len(parts) == 3, len(parts)  # the command line's interpreter, then the server's
    cli, server = (
        {line.rsplit("|", 1)[1].strip() for line in part.splitlines()
         if line.startswith("import time:")} for part in parts[1:])
    assert "typer" in cli and "gatehouse.app" in server and "uvicorn" in server
    # the command line only puts its options in the environment: the settings (~0.2 s) are
    # the server's to load, once (Typer itself loads pydantic to read options: it stays)
    assert [m for m in ("gatehouse.config", "gatehouse.cli.serving", "pydantic_settings")
            if m in cli] == []
    # (Click is uvicorn's own: it stays)
    assert [m for m in ("typer", "rich", "alembic", "mako") if m in server] == []


# records the collector's state where gatehouse/heap.py changes it, in a command's process
GC_PROBE = """
import atexit, gc, json, sys
import gatehouse.heap as heap
seen = {}
loaded = heap.command_loaded
def spy():
    seen["enabled while importing"] = gc.isenabled()
    loaded()
    seen["enabled when it runs"] = gc.isenabled()
    seen["frozen when it runs"] = gc.get_freeze_count()
heap.command_loaded = spy
atexit.register(lambda: print(json.dumps({**seen, "frozen at exit": gc.get_freeze_count(),
                                          "walked at exit": len(gc.get_objects())}),
                              file=sys.stderr))
sys.argv = ["gatehouse", *json.loads(sys.argv[1])]
from gatehouse.cli.main import main
main()
"""


def test_a_command_imports_without_collections_and_runs_with_them(tmp_path: Path) -> None:
    """A command's process imports with the cyclic collector off, freezes what it imported
    and runs the command with the collector on; the interpreter's exit finds everything
    frozen (``keys list``: ~490 → ~370 ms, bench/cli.py)."""
    config = tmp_path / "gatehouse.toml"
    modules_after("init", "--config", str(config), cwd=tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    done = subprocess.run([sys.executable, "-c", GC_PROBE,
                           json.dumps(["keys", "list", "--config", str(config)])],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "default/demo" in done.stdout  # the command ran
    seen = json.loads(done.stderr.strip().splitlines()[-1])
    assert seen["enabled while importing"] is False
    assert seen["enabled when it runs"] is True
    assert seen["frozen when it runs"] > 100_000  # SQLAlchemy, pydantic, Typer … out of its way
    assert seen["frozen at exit"] >= seen["frozen when it runs"]
    assert seen["walked at exit"] < 1_000  # what the exit's collections walk: next to nothing


def test_the_typer_app_driven_in_process_leaves_the_collector_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests (and any program) driving ``app`` are not a command's process: nothing frozen,
    the collector as it was."""
    import gc

    from typer.testing import CliRunner

    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "disable", lambda: calls.append("disable"))
    result = CliRunner().invoke(app, ["tiers", "--help"])
    assert result.exit_code == 0, result.output
    assert calls == []
    assert gc.isenabled()
