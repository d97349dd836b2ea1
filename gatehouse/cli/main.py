"""``gatehouse serve | check``: run the gateway, or check a configuration without running it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gatehouse import __version__
from gatehouse.cli import accounts, doctor, edge, health, incidents, quota, requests, setup
from gatehouse.cli.common import ConfigOpt, config_failed
from gatehouse.config import ConfigError, Settings, load_settings

app = typer.Typer(help="gatehouse — an OpenAI-compatible LLM gateway.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)
app.command()(setup.init)
app.command()(setup.migrate)
app.add_typer(accounts.orgs, name="orgs")
app.add_typer(accounts.projects, name="projects")
app.add_typer(accounts.keys, name="keys")
app.add_typer(accounts.users, name="users")
app.add_typer(accounts.tiers, name="tiers")
app.add_typer(quota.limits, name="limits")
app.add_typer(edge.rules, name="rules")
app.add_typer(edge.bans, name="bans")
app.add_typer(edge.rays, name="rays")
app.add_typer(requests.requests, name="requests")
app.command()(health.health)
app.add_typer(incidents.incidents, name="incidents")
app.command()(quota.usage)
app.command()(doctor.doctor)


def _load(config: Path | None) -> Settings:
    try:
        settings = load_settings(config)
        from gatehouse.app import build_router
        from gatehouse.telemetry.metrics import Metrics

        build_router(settings, Metrics())  # api keys in the environment, backends resolvable
        return settings
    except ConfigError as exc:
        config_failed(exc)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (as uvicorn binds it), or None."""
    import socket

    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot resolve {host} ({exc.strerror})"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8787).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    if config is not None:
        os.environ["GATEHOUSE_CONFIG"] = str(config)
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"GATEHOUSE_SERVER__{name}"] = str(value)
    settings = _load(config)
    s = settings.server
    busy = _cannot_listen(s.host, s.port)
    if busy is not None:  # said before anything else, instead of after a banner
        err.print(f"cannot listen on {s.host}:{s.port}: {busy}. Is another gatehouse running? "
                  "Pick another port with --port.", soft_wrap=True, markup=False)
        raise typer.Exit(1)
    if settings.storage.migrate_on_start:
        import asyncio

        # before any worker starts: the schema, and on an empty store the first keys
        shown_key = setup.hand_over(asyncio.run(setup.first_keys(settings)), settings)
    else:
        shown_key = None
    if s.workers > 1 and settings.storage.state_url.startswith("memory://"):
        err.print("[bold yellow]warning[/] several workers with state_url = \"memory://\": "
                  "each worker keeps its own web sessions and hears only its own key "
                  "revocations (others within identity.key_cache_ttl). Use Redis: "
                  "state_url = \"redis://127.0.0.1:6379/0\" (docs/deployment.md).")
    if s.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers share their metrics through files, so /metrics on any worker sums them all
        metrics_dir = tempfile.mkdtemp(prefix="gatehouse-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    from gatehouse.app import create_app

    models = ", ".join([*settings.models, *([settings.demo.model] if settings.demo.enabled else [])])
    err.print(f"[bold]gatehouse {__version__}[/] on [cyan]http://{s.host}:{s.port}[/] "
              f"({s.workers} worker{'s' if s.workers > 1 else ''}; config: {settings.source})",
              soft_wrap=True)
    base = f"http://{s.host}:{s.port}"
    if not settings.identity.require_key:
        example = f"curl {base}/v1/models"
    elif shown_key is not None:
        example = f'curl -H "Authorization: Bearer {shown_key}" {base}/v1/models'
    else:
        example = (f"curl {base}/healthz (API calls need a key: "
                   "gatehouse keys create default/demo)")
    err.print(f"models: {models or 'none'} · try: {example}", soft_wrap=True, markup=False,
              highlight=False)
    from gatehouse.edge.connections import raise_fd_limit

    raise_fd_limit()  # before the workers start: they inherit it
    # httptools with the head limits, deadlines and connection caps (gatehouse/edge/protocol.py)
    common = dict(host=s.host, port=s.port, loop="uvloop",
                  http="gatehouse.edge.protocol:GuardedHttpProtocol", lifespan="on",
                  access_log=False, log_level="warning", proxy_headers=False,
                  server_header=False, timeout_graceful_shutdown=int(s.shutdown_grace_seconds),
                  timeout_keep_alive=s.keepalive_timeout)
    if s.workers > 1:
        uvicorn.run("gatehouse.app:app_from_env", factory=True, workers=s.workers,
                    **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings, share_state=True), **common)  # type: ignore[arg-type]


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Check a configuration and print what it resolves to."""
    settings = _load(config)
    err.print(f"[green]ok[/] {settings.source}")
    typer.echo(settings.model_dump_json(indent=2))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
