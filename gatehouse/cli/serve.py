"""``gatehouse serve | check``: run the gateway, or check a configuration without running it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gatehouse.cli.options import ConfigOpt

if TYPE_CHECKING:
    from gatehouse.config import Settings


def _load(config: Path | None) -> Settings:
    from gatehouse.cli.common import config_failed
    from gatehouse.cli.serving import checked_settings
    from gatehouse.config import ConfigError

    try:
        return checked_settings(config)
    except ConfigError as exc:
        config_failed(exc)


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8787).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    os.environ.update(options_environment(config, host, port, workers))
    # the options are in the environment: become the serving process, a fresh interpreter
    # without the CLI's modules (gatehouse/cli/serving.py); the process id stays the same
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gatehouse.cli.serving"])


def options_environment(config: Path | None = None, host: str | None = None,
                        port: int | None = None, workers: int | None = None) -> dict[str, str]:
    """``gatehouse serve``'s options as the environment the serving process reads them from
    (the settings' ``GATEHOUSE_…`` variables); an option not given is left out. Here, not in
    gatehouse/cli/serving.py: importing that module loads the settings (pydantic, ~0.2 s),
    which the command line has no use for before it becomes the serving process."""
    env = {} if config is None else {"GATEHOUSE_CONFIG": str(config)}
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            env[f"GATEHOUSE_SERVER__{name}"] = str(value)
    return env


def check(config: ConfigOpt = None) -> None:
    """Check a configuration and print what it resolves to."""
    from gatehouse.cli.common import err
    from gatehouse.quota import o200k

    settings = _load(config)
    err.print(f"[green]ok[/] {settings.source}")
    if not o200k.built():
        err.print("[yellow]note[/] o200k_base tokens are counted with quicktok (~56 MB more per "
                  f"worker): this install has no compiled token counter. {o200k.REBUILD}")
    typer.echo(settings.model_dump_json(indent=2))
