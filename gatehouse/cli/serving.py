"""The process that serves: what ``gatehouse serve`` becomes (``os.execv``) once Typer has read
its options into the environment — ``python -m gatehouse.cli.serving``.

A fresh interpreter, so a worker holds none of the CLI (Typer, Click, Rich: ~5 MB of RSS a
one-worker server kept for its life) and nothing the command line loaded on the way. It
checks the configuration, refuses a port it cannot bind, migrates the store (in a child
process), reads the server secret (made only for a store without keys) and makes the first
keys, prints the banner, then runs uvicorn: in this process with one worker, as its
supervisor with several (each worker spawned, building its app from the environment)."""

from __future__ import annotations

import asyncio
import atexit
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from gatehouse import __version__
from gatehouse.config import ConfigError, ServerSettings, Settings, load_settings


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def config_failed(exc: ConfigError) -> NoReturn:
    for line in str(exc).splitlines():
        say(f"configuration error {line}")
    raise SystemExit(2)


def cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (as uvicorn binds it) and what to do about it, or
    None. Only an address in use can mean another gatehouse."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return (f"cannot resolve {host} ({exc.strerror}). Check the host: --host or [server] "
                "host, a name this machine resolves or an address such as 127.0.0.1")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return listen_failure(exc)
    return None


def listen_failure(exc: OSError) -> str:
    """Why an address could not be bound, and what to do about it."""
    return (exc.strerror or str(exc)).lower() + LISTEN_HINTS.get(
        exc.errno or 0, ". Pick another address (--host) or port (--port).")


LISTEN_HINTS = {
    errno.EADDRINUSE: ". Is another gatehouse (or another server) running on it? Pick another "
                      "port with --port.",
    errno.EACCES: ". Ports below 1024 need privileges: pick a port of 1024 or above with "
                  "--port (and a reverse proxy in front), or grant CAP_NET_BIND_SERVICE.",
    errno.EADDRNOTAVAIL: ". The address is not one of this machine's: pick one with --host "
                         "(0.0.0.0 or :: listens on all of them).",
}


def checked_settings(config: Path | None = None) -> Settings:
    """The settings (``config``, else $GATEHOUSE_CONFIG, and GATEHOUSE_* variables), with
    their backends resolvable, the API keys they name present in the environment and the
    edge's files (geo databases, rule lists) readable; raises ConfigError saying the
    problems."""
    settings = load_settings(config)
    from gatehouse.app import build_router, check_edge_files
    from gatehouse.telemetry.metrics import Metrics

    build_router(settings, Metrics())
    check_edge_files(settings)
    return settings


def migrate_apart(settings: Settings) -> None:
    """A store behind the newest schema is migrated in a child process: done here, Alembic
    and Mako (~10 MB) would stay in the server for its life. The child is a fork of this
    process, which has imported everything but Alembic already (a fresh ``gatehouse migrate``
    imported it all again: ~0.7 s of CPU every first start paid); with a thread running, where
    a fork is unsafe, it is that command."""
    from gatehouse.identity.service import resolve_paths
    from gatehouse.store.db import STORE_ERRORS, Store, head_revision, unusable

    async def behind() -> bool:
        store = Store(resolve_paths(settings)[0])
        try:
            return not await store.at_head()
        finally:
            await store.aclose()

    async def migrate() -> None:
        store = Store(resolve_paths(settings)[0])
        try:
            await store.migrate()
        except STORE_ERRORS as exc:  # one line, not a driver's traceback
            said = unusable(settings.storage.database_url, exc)
            if said is None:
                raise
            say(said)
            raise SystemExit(1) from None
        finally:
            await store.aclose()

    if not asyncio.run(behind()):
        return
    # with a thread running a fork is unsafe: then the command (which says what it did)
    fork = threading.active_count() == 1
    if fork:
        code = forked(migrate)
    else:
        code = subprocess.run([sys.executable, "-m", "gatehouse", "migrate"],
                              check=False).returncode
    if code < 0:
        say(f"migrating the store failed: the migration was killed by signal {-code}")
        raise SystemExit(1)
    if code:
        say(f"migrating the store failed (exit status {code}); see the lines above")
        raise SystemExit(code)
    if fork:
        say(f"store migrated to revision {head_revision()}")


def forked(work: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``work`` in a forked child and return its exit code (negative: the signal that
    killed it). The child leaves by ``os._exit``, without the parent's exit hooks."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            try:
                asyncio.run(work())
                status = 0
            except SystemExit as exc:  # the work said why
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001  # said, and the parent stops on the status
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:  # whatever happened above (a closed stderr included), the child ends here
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def read_secret(settings: Settings) -> None:
    """The server secret read — or made, on a store without API keys — before any worker
    needs it; a secret that cannot be read, or made (its file lost while the store holds
    keys), or a store that cannot say whether it holds keys, stops the start in one line."""
    from gatehouse.identity.service import server_secret
    from gatehouse.store.db import STORE_ERRORS, unusable

    try:
        server_secret(settings)
    except ConfigError as exc:
        config_failed(exc)
    except STORE_ERRORS as exc:
        said = unusable(settings.storage.database_url, exc)
        if said is None:
            raise
        say(f"{said} (the server secret file is missing, and a new one is made only once the "
            "store shows it holds no API keys)")
        raise SystemExit(1) from None


def main() -> None:
    try:
        settings = checked_settings()
    except ConfigError as exc:
        config_failed(exc)
    s = settings.server
    busy = cannot_listen(s.host, s.port)
    if busy is not None:  # said before anything else, instead of after a banner
        say(f"cannot listen on {s.host}:{s.port}: {busy}")
        raise SystemExit(1)
    shown_key = None
    if settings.storage.migrate_on_start:
        # before any worker starts: the schema, the secret, and on an empty store the first
        # keys (the secret after the schema: whether it may be made is the store's to say)
        migrate_apart(settings)
    read_secret(settings)
    if settings.storage.migrate_on_start:
        from gatehouse.cli.firstrun import first_keys, hand_over

        shown_key = hand_over(asyncio.run(first_keys(settings)), settings)
    if s.workers > 1 and settings.storage.state_url.startswith("memory://"):
        say("warning: several workers with state_url = \"memory://\": each worker keeps its "
            "own web sessions and hears only its own key revocations (others within "
            "identity.key_cache_ttl). Use Redis: state_url = \"redis://127.0.0.1:6379/0\" "
            "(docs/deployment.md).")
    if s.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers share their metrics through files, so /metrics on any worker sums them all
        metrics_dir = tempfile.mkdtemp(prefix="gatehouse-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    models = ", ".join([*settings.models, *([settings.demo.model] if settings.demo.enabled else [])])
    say(f"gatehouse {__version__} on http://{s.host}:{s.port} "
        f"({s.workers} worker{'s' if s.workers > 1 else ''}; config: {settings.source})")
    base = f"http://{s.host}:{s.port}"
    if not settings.identity.require_key:
        example = f"curl {base}/v1/models"
    elif shown_key is not None:
        example = f'curl -H "Authorization: Bearer {shown_key}" {base}/v1/models'
    else:
        example = (f"curl {base}/healthz (API calls need a key: "
                   "gatehouse keys create default/demo)")
    say(f"models: {models or 'none'} · try: {example}")
    import uvicorn

    from gatehouse.edge.connections import raise_fd_limit

    raise_fd_limit()  # before the workers start: they inherit it
    # httptools with the head limits, deadlines and connection caps (gatehouse/edge/protocol.py)
    common: dict[str, Any] = {
        "host": s.host, "port": s.port, "loop": "uvloop",
        "http": "gatehouse.edge.protocol:GuardedHttpProtocol", "ws": "none",
        "lifespan": "on",
        "access_log": False, "log_level": "warning", "proxy_headers": False,
        "server_header": False, "timeout_graceful_shutdown": int(s.shutdown_grace_seconds),
        "timeout_keep_alive": s.keepalive_timeout}
    if s.workers > 1:
        serve_workers(s, common)
    else:
        from gatehouse.app import create_app

        uvicorn.run(create_app(settings, share_state=True), **common)


def serve_workers(s: ServerSettings, common: dict[str, Any]) -> None:
    """``--workers N``: uvicorn's supervisor and workers, each worker on a listening socket
    of its own in one SO_REUSEPORT group (``[server] reuse_port``, on Linux), else on one
    socket they share (gatehouse/edge/listeners.py)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from gatehouse.edge.listeners import AVAILABLE, WorkerListener, bind_reuse_port

    config = uvicorn.Config("gatehouse.app:app_from_env", factory=True, workers=s.workers,
                            **common)
    if s.reuse_port and AVAILABLE:
        try:  # held, never listening: the address stays the group's while workers restart
            held = bind_reuse_port(s.host, s.port)
        except OSError as exc:
            say(f"cannot listen on {s.host}:{s.port}: {listen_failure(exc)}")
            raise SystemExit(1) from None
        sockets: list[Any] = [WorkerListener(s.host, s.port)]
    else:
        held = config.bind_socket()
        sockets = [held]
    try:
        Multiprocess(config, sockets=sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        held.close()


if __name__ == "__main__":
    main()
