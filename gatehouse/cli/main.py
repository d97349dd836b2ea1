"""``gatehouse serve | check``: run the gateway, or check a configuration without running it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gatehouse import __version__
from gatehouse.cli import accounts, doctor, edge, quota, requests, setup
from gatehouse.cli.common import ConfigOpt
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
        err.print(f"[bold red]configuration error[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8787).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default 1).")] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    if config is not None:
        os.environ["GATEHOUSE_CONFIG"] = str(config)
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"GATEHOUSE_SERVER__{name}"] = str(value)
    settings = _load(config)
    if settings.storage.migrate_on_start:
        import asyncio

        # before any worker starts: the schema, and on an empty store the first keys
        setup.hand_over(asyncio.run(setup.first_keys(settings)), settings)
    s = settings.server
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
              f"({s.workers} worker{'s' if s.workers > 1 else ''}; config: {settings.source})")
    err.print(f"models: {models or 'none'} · try: curl http://{s.host}:{s.port}/v1/models")
    common = dict(host=s.host, port=s.port, loop="uvloop", http="httptools", lifespan="on",
                  access_log=False, log_level="warning", proxy_headers=False,
                  server_header=False, timeout_graceful_shutdown=int(s.shutdown_grace_seconds),
                  timeout_keep_alive=30)
    if s.workers > 1:
        uvicorn.run("gatehouse.app:app_from_env", factory=True, workers=s.workers,
                    **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]


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
