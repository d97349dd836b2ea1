"""``gatehouse serve`` on a store behind the schema: migrated in a forked child before the
server starts (the server keeps no Alembic), said in one line; a store that cannot be migrated
stops the start with the reason and a non-zero status, before any banner."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gatehouse import __version__
from gatehouse.store.db import head_revision

ROOT = Path(__file__).resolve().parents[2]


def start(tmp: Path, store: Path, extra: str = "",
          **env: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    config = tmp / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{store}"\n'
                      f'[identity]\nrequire_key = false\nsecret_file = "{tmp / "secret"}"\n'
                      + extra)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gatehouse", "serve", "--config",
                                 str(config), "--port", str(port)], env={**serve_env(), **env},
                                cwd=tmp,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log, port


def serve_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GATEHOUSE_CONFIG", None)
    return env


def serve_once(tmp: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gatehouse serve`` that is expected to stop by itself: its status and output."""
    return subprocess.run([sys.executable, "-m", "gatehouse", "serve", "--config", str(config),
                           *args], env=serve_env(), cwd=tmp, capture_output=True, text=True,
                          timeout=180, check=False)


def serving(proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
    deadline = time.monotonic() + 180  # a start on a starved machine
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def test_a_fresh_store_is_migrated_once_and_said(tmp_path: Path) -> None:
    store = tmp_path / "gh.db"
    for first in (True, False):
        proc, log, port = start(tmp_path, store)
        try:
            serving(proc, log, port)
            # the demo model answers from the migrated store's first key's world
            assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
        finally:
            stop(proc)
        said = log.read_text()
        assert (f"store migrated to revision {head_revision()}" in said) is first, said
        assert "Traceback" not in said


def test_a_store_that_cannot_be_migrated_stops_the_start(tmp_path: Path) -> None:
    store = tmp_path / "gh.db"
    store.write_bytes(b"this is not a SQLite database\n" * 200)
    proc, log, _ = start(tmp_path, store)
    assert proc.wait(60) == 1
    said = log.read_text()
    assert "migrating the store failed (exit status 1)" in said, said
    assert "file is not a database" in said  # the child's reason, above that line
    assert " on http://" not in said  # no banner for a server that never started
    assert store.read_bytes().startswith(b"this is not a SQLite database")  # left as it was


def test_a_bad_configuration_stops_the_start_with_every_problem(tmp_path: Path) -> None:
    """Said by the serving process (after the exec) as the CLI says it: each problem on a
    line of its own, exit status 2, no traceback, no banner."""
    config = tmp_path / "gatehouse.toml"
    config.write_text('[storage]\ndatabase_url = "mysql://x"\n[server]\nworkers = 0\n')
    done = serve_once(tmp_path, config)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("configuration error")]
    assert any("storage.database_url" in line for line in lines), done.stderr
    assert any("server.workers" in line for line in lines), done.stderr
    assert "Traceback" not in done.stderr and " on http://" not in done.stderr


def test_a_port_in_use_is_said_before_anything_else(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gatehouse.toml"
        config.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/gh.db"\n')
        done = serve_once(tmp_path, config, "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Is another gatehouse" in done.stderr and "Pick another port with --port" in done.stderr
    assert not (tmp_path / "gh.db").exists()  # nothing was made for a server that cannot run


def test_only_an_address_in_use_asks_about_another_gatehouse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # found by a review: the hint came with every listen error, an unknown host's included
    from gatehouse.cli import serving

    unresolved = serving.cannot_listen("no-such-host.invalid", 8787)
    assert unresolved is not None and "cannot resolve no-such-host.invalid" in unresolved
    not_here = serving.cannot_listen("192.0.2.1", 8787)  # TEST-NET-1: no machine's own
    assert not_here is not None and "not one of this machine's" in not_here
    for said in (unresolved, not_here):
        assert "another gatehouse" not in said

    class Refused(socket.socket):
        def bind(self, address: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(serving.socket, "socket", Refused)
    low = serving.cannot_listen("127.0.0.1", 80)
    assert low is not None and low.startswith("permission denied. Ports below 1024")
    assert "another gatehouse" not in low


def test_an_unreachable_store_stops_the_start_in_one_line(tmp_path: Path) -> None:
    """PostgreSQL not answering at start: the reason in one line, its password hidden, no
    driver traceback, status 1."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = tmp_path / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = '
                      f'"postgresql+asyncpg://gh:s3cret-pw@127.0.0.1:{port}/test"\n'
                      f'[identity]\nsecret_file = "{tmp_path / "secret"}"\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = probe.getsockname()[1]
    done = serve_once(tmp_path, config, "--port", str(listen))
    assert done.returncode == 1, done.stderr
    assert f"cannot use the store at postgresql+asyncpg://gh:***@127.0.0.1:{port}/test" \
        in done.stderr, done.stderr
    assert "s3cret-pw" not in done.stderr and "Traceback" not in done.stderr
    assert "migrating the store failed (exit status 1)" in done.stderr


def on_sqlite(tmp: Path, command: list[str], secret_file: Path
              ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``gatehouse COMMAND`` on a SQLite store in ``tmp``: its config and how it ended."""
    (tmp / "g.db").touch()  # an empty store: commands that only read refuse a missing one
    config = tmp / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp / "g.db"}"\n'
                      f'[identity]\nsecret_file = "{secret_file}"\n')
    return config, subprocess.run([sys.executable, "-m", "gatehouse", *command, "--config",
                                   str(config)], env=serve_env(), cwd=tmp, capture_output=True,
                                  text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["keys", "list"],
                                     ["users", "list"], ["keys", "create", "default/x"]])
def test_a_secret_file_that_cannot_be_read_is_a_configuration_error(
        tmp_path: Path, command: list[str]) -> None:
    """``[identity] secret_file`` naming a directory: the command (and ``serve`` before it
    starts anything) says so in one line, naming the file, status 2 — it was a traceback."""
    (tmp_path / "secrets").mkdir()
    config, done = on_sqlite(tmp_path, command, tmp_path / "secrets")
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.split())
    assert (f"configuration error {config}: identity.secret_file: the server secret file "
            f"{tmp_path / 'secrets'} is a directory") in said, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("edge", [
    ('[edge]\ngeo_database = "{dir}"\n', "edge.geo_database: cannot open the database"),
    ('[edge]\nasn_database = "{junk}"\n', "edge.asn_database: cannot open the database"),
    ('[[edge.rules]]\naction = "deny"\nlist = "{dir}"\n', "edge.rules: list file {dir}: Is a"),
    ('[[edge.rules]]\naction = "deny"\nlist = "{missing}"\n', "edge.rules: list file {missing}:"),
])
def test_the_edge_files_are_read_by_check_and_before_serve_starts(
        tmp_path: Path, edge: tuple[str, str]) -> None:
    """A geo database that is not one, a rule's list file that is a directory or missing:
    ``check`` said "ok", and ``serve`` printed its banner, then failed in the worker with a
    traceback (the geo database) or uvicorn's "Application startup failed"."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "junk.mmdb").write_bytes(b"not a MaxMind database")
    paths = {"dir": tmp_path / "dir", "junk": tmp_path / "junk.mmdb",
             "missing": tmp_path / "missing.txt"}
    toml, said = (part.format(**paths) for part in edge)
    config = tmp_path / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "g.db"}"\n'
                      + toml)
    for command in (["check"], ["serve"]):
        done = subprocess.run([sys.executable, "-m", "gatehouse", *command, "--config",
                               str(config)], env=serve_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert said in " ".join(done.stderr.split()), done.stderr
        assert "Traceback" not in done.stderr and "gatehouse " + __version__ + " on" \
            not in done.stderr  # refused before the banner


@pytest.mark.parametrize("command", [["migrate"], ["init"], ["keys", "list"],
                                     ["limits", "list"], ["rules", "list"],
                                     ["requests", "show", "req_x"]])
def test_cli_commands_say_an_unusable_store_in_one_line(tmp_path: Path,
                                                         command: list[str]) -> None:
    """PostgreSQL not answering, or a SQLite file that is not a database: every command that
    reads the store says so in one line with the password hidden, status 1, no traceback."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    for url, shown in [(f"postgresql+asyncpg://gh:s3cret-pw@127.0.0.1:{port}/test",
                        f"postgresql+asyncpg://gh:***@127.0.0.1:{port}/test"),
                       (f"sqlite+aiosqlite:///{corrupt}", f"sqlite+aiosqlite:///{corrupt}")]:
        config = tmp_path / "gatehouse.toml"
        config.write_text(f'[storage]\ndatabase_url = "{url}"\n'
                          f'[identity]\nsecret_file = "{tmp_path / "secret"}"\n')
        done = subprocess.run([sys.executable, "-m", "gatehouse", *command, "--config",
                               str(config)], env=serve_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1, (done.stdout, done.stderr)
        said = " ".join(done.stderr.split())  # Rich wraps long lines
        assert f"cannot use the store at {shown}:" in said, done.stderr
        assert "s3cret-pw" not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["keys", "revoke", "[/x]"], ["rules", "remove", "[/]"],
                                     ["orgs", "set-tier", "[/x]", "standard"],
                                     ["incidents", "show", "[/foo]"]])
def test_brackets_in_an_argument_are_words_not_markup(tmp_path: Path,
                                                      command: list[str]) -> None:
    """Rich read ``[/x]`` in an error message as a closing tag: MarkupError, a traceback."""
    _, done = on_sqlite(tmp_path, command, tmp_path / "secret")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and command[2] in done.stderr, done.stderr


def test_a_file_the_store_cannot_write_is_one_line() -> None:
    """A store in a read-only directory: its lock file cannot be made (errno 30), which was
    re-raised as a traceback by every command that reads the store."""
    import io

    import typer
    from rich.console import Console

    from gatehouse.cli import common
    from tests.unit.conftest import make_settings

    settings = make_settings(Path("/tmp"))
    said = io.StringIO()
    console, common.err = common.err, Console(file=said, width=200)
    try:
        with pytest.raises(typer.Exit) as caught, common.store_errors(settings):
            raise OSError(30, "Read-only file system", "/srv/gatehouse.db.migrate-lock")
    finally:
        common.err = console
    assert caught.value.exit_code == 1
    assert said.getvalue().strip() == \
        "error Read-only file system: /srv/gatehouse.db.migrate-lock"


def test_an_upgrade_request_is_answered_as_http_through_the_pipeline(tmp_path: Path) -> None:
    """The gateway serves no WebSocket (uvicorn runs with ws "none", so the websockets
    package is never imported): an upgrade request is the plain HTTP request it also is —
    answered by the pipeline with a request id, the edge's rules applied — and the connection
    closes after it. It was uvicorn's 500 and an ERROR line in the log for every such request,
    with no stage run (deny rules and bans did not apply)."""
    extra = '[[edge.rules]]\naction = "deny"\nname = "no-realtime"\npath = "^/v1/realtime"\n'
    proc, log, port = start(tmp_path, tmp_path / "gh.db", PYTHONPROFILEIMPORTTIME="1",
                            extra=extra)
    upgrade = (b"Host: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")

    def ask(path: bytes) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"GET " + path + b" HTTP/1.1\r\n" + upgrade + b"GET /healthz HTTP/1.1\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):  # until the gateway closes the connection
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return head.lower(), body

    try:
        serving(proc, log, port)
        head, body = ask(b"/v1/models")
        assert head.startswith(b"http/1.1 200 ") and b"x-request-id: req_" in head
        assert b"connection: close" in head and b'"object":"list"' in body
        assert b"/healthz" not in body and body.count(b"HTTP/1.1") == 0  # nothing after it
        head, body = ask(b"/v1/realtime")
        assert head.startswith(b"http/1.1 403 ") and b"x-request-id: req_" in head
        assert b"1020" in body  # the deny rule's answer (Error 1020), not a 500
        # with a body (h2c sends it before switching): cannot be read after an upgrade's head
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\n"
                         b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQ\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and b"upgrade_not_supported" in answer
        lines = log.read_text()
        imported = {line.rsplit("|", 1)[1].strip() for line in lines.splitlines()
                    if line.startswith("import time:")}
        assert "websockets" not in imported and "wsproto" not in imported
        assert "ERROR" not in lines and "Unsupported upgrade" not in lines
    finally:
        stop(proc)
