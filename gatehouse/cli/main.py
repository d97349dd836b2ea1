"""The ``gatehouse`` command: each subcommand's module is imported only when it runs.

``gatehouse version`` and ``gatehouse --help`` import none of the store, the server, the
doctor, Rich's tables or pydantic (tests/unit/test_cli_imports.py): the top-level help is
Click's plain one, drawn from the one-line helps below (the same test checks they match the
commands'), and their ``--help`` flags need no pydantic validator (``FalseHelpFlag``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from gatehouse import __version__, heap

# name → (module in gatehouse.cli, attribute: a command function or a Typer group, its
# one-line help, as the command's own)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("setup", "init", ("Write a starter gatehouse.toml (if absent), create the store, "
                              "print the first keys.")),
    "migrate": ("setup", "migrate", ("Bring the store's schema up to date (also done by "
                                    "`serve` on start).")),
    "health": ("health", "health", ("Requests, errors by class, latency percentiles, tokens "
                                   "and sparklines over a window, from the minute rollups.")),
    "usage": ("quota", "usage", ("What an org used (requests and tokens) since a time, and its "
                                "current windows.")),
    "doctor": ("doctor", "doctor", ("Diagnose why requests fail: status page, network and TLS, "
                                   "API path, web path, HAR.")),
    "serve": ("serve", "serve", "Run the gateway (uvicorn with uvloop and httptools)."),
    "check": ("serve", "check", "Check a configuration and print what it resolves to."),
    "orgs": ("accounts", "orgs", "Organisations: the top of the account tree; each has a tier."),
    "projects": ("accounts", "projects", ("Projects inside an org (ORG/PROJECT); keys belong to "
                                         "a project.")),
    "keys": ("accounts", "keys", "API keys: create (shown once), list, revoke, rotate."),
    "users": ("accounts", "users", "People who sign in to the web path."),
    "tiers": ("accounts", "tiers", "Tiers defined in gatehouse.toml."),
    "limits": ("quota", "limits", "Limit overrides for one org, project, key or user."),
    "rules": ("edge", "rules", ("Firewall rules: allow, deny or challenge by address, list "
                               "file, user agent, path, country or ASN (first match wins).")),
    "bans": ("edge", "bans", "Timed bans of addresses and networks (shared by every replica)."),
    "rays": ("edge", "rays", "Look up what the edge did for a Ray ID."),
    "requests": ("requests", "requests", "Look requests up in the request log."),
    "incidents": ("incidents", "incidents", ("The status page's incidents and scheduled "
                                            "maintenance.")),
}


def load_command(name: str) -> Any:
    """The Click command for ``name``, its module imported now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"gatehouse.cli.{module}"), attribute)
    command: Any
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class FalseHelpFlag:
    """A ``--help`` flag whose value, when not given, is ``False`` rather than None: Typer
    (0.29) coerces a flag's None through a pydantic TypeAdapter, which imports pydantic and
    builds a validator (~100 ms) for a flag that only ever says "not asked for"."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.default is None:
            option.default = False
        return option


class VersionCommand(FalseHelpFlag, TyperCommand):
    pass


class LazyGroup(FalseHelpFlag, TyperGroup):
    """Commands from ``COMMANDS`` are loaded when asked for, not to list them."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            command = self.commands[cmd_name] = load_command(cmd_name)
            heap.command_loaded()
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # Click's own layout: Typer's Rich one would load Rich's tables and every command
        super(TyperGroup, self).format_help(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][2] if name in COMMANDS else
                 self.commands[name].get_short_help_str(limit=200))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(cls=LazyGroup, help="gatehouse — an OpenAI-compatible LLM gateway.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def gatehouse() -> None:
    # a group even with one command registered here (Typer would make a lone one the app)
    pass


@app.command(cls=VersionCommand)
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    heap.command_starts()  # the collector off while the command's modules are imported
    try:
        app()
    except Exception as exc:
        # a configuration problem found while a command runs (the server secret's file, …):
        # said like one found while loading, not as a traceback. Looked up, not imported:
        # a command that never loaded the configuration cannot have raised it
        config = sys.modules.get("gatehouse.config")
        if config is None or not isinstance(exc, config.ConfigError):
            raise
        from gatehouse.cli.serving import config_failed

        config_failed(exc)
    finally:
        heap.command_ends()
