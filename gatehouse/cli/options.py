"""Options several commands share, kept apart from gatehouse/cli/common.py so a command can
declare them without loading the configuration's models and Rich (``serve`` execs a fresh
interpreter at once: what it imported first is thrown away)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Path to gatehouse.toml (default: $GATEHOUSE_CONFIG or ./gatehouse.toml).")]
