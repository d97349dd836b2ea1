"""What every command shares: the --config option and loading settings with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gatehouse.config import ConfigError, Settings, load_settings

err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Path to gatehouse.toml (default: $GATEHOUSE_CONFIG or ./gatehouse.toml).")]


def load_for_cli(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/] {exc}")
        raise typer.Exit(2) from None
