"""``gatehouse doctor [URL]``: run the triage matrix against a gateway or OpenAI and write a
support-ready report. Exit codes by outcome (docs/doctor.md)."""

from __future__ import annotations

import asyncio
import math
import os
import ssl
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from gatehouse.doctor import Answers, Checkup, diagnose
from gatehouse.doctor.certs import load_pem
from gatehouse.doctor.har import HarError
from gatehouse.doctor.lookup import MAX_LOOKUPS, valid_id
from gatehouse.doctor.markdown import BRANCHES, render
from gatehouse.doctor.profiles import DEFAULT_URL, Endpoint, profile_for
from gatehouse.doctor.run import STEPS


class ProfileName(StrEnum):
    gatehouse = "gatehouse"
    openai = "openai"


class YesNo(StrEnum):
    yes = "yes"
    no = "no"


class Step(StrEnum):
    status = "status"
    network = "network"
    api = "api"
    web = "web"
    health = "health"


class RichProgress:
    """A spinner per running probe; one line per finished probe."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=console, transient=True)
        self.tasks: dict[str, object] = {}

    def started(self, step: str) -> None:
        self.tasks[step] = self.bar.add_task(STEPS[step], total=None)

    def finished(self, step: str, summary: str, ok: bool = True) -> None:
        task = self.tasks.pop(step, None)
        if task is not None:
            self.bar.remove_task(task)  # type: ignore[arg-type]
        mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
        self.console.print(then(f"{mark} {STEPS[step]}: ", summary))


def then(markup: str, text: str) -> Text:
    """Rich markup, then ``text`` exactly as it is. Markup-escaping text that ends the line
    doubled a trailing backslash (rich's ``escape`` guards a tag that would follow); a path
    like ``C:\\certs\\`` in a finding was shown with two."""
    return Text.from_markup(markup).append(text)


SIDES = {"you": "yellow", "service": "red", "none": "green", "unclear": "magenta"}


def request_ids(given: list[str]) -> tuple[str, ...]:
    if len(given) > MAX_LOOKUPS:
        raise typer.BadParameter(f"at most {MAX_LOOKUPS} ids", param_hint="--request-id")
    for value in given:
        if not valid_id(value):
            raise typer.BadParameter(f"{value[:40]!r}: 1 to 512 printable ASCII characters",
                                     param_hint="--request-id")
    return tuple(given)


MAX_TIMEOUT = 3600.0  # seconds; a socket's timeout overflows near 1e10


def service_url(value: str, hint: str) -> str:
    """An http(s) URL with a host and a valid port — or a usage error, before anything runs
    (a port over 65535 or a control character raised a traceback; ``ftp://`` was blamed on
    the network)."""
    def bad(why: str) -> typer.BadParameter:
        return typer.BadParameter(f"{value[:80]!r}: {why}", param_hint=hint)

    if not value.isprintable() or any(c.isspace() for c in value):
        raise bad("a URL has no spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 — raises ValueError for a port out of 0-65535
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise bad("the doctor speaks http:// and https:// only")
    if not parts.hostname:
        raise bad("no host")
    if parts.port == 0:
        raise bad("port 0 cannot be connected to")
    return value


def endpoint(value: str) -> Endpoint:
    try:
        parsed = Endpoint.parse(service_url(value, "--host") if "://" in value else value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value[:80]!r}: {exc}", param_hint="--host") from None
    if not parsed.host or not 0 < parsed.port <= 65535 or not value.isprintable():
        raise typer.BadParameter(f"{value[:80]!r}: host, host:port (1-65535) or URL",
                                 param_hint="--host")
    return parsed


def seconds(value: float) -> float:
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise typer.BadParameter(f"{value}: seconds above 0, at most {MAX_TIMEOUT:g}",
                                 param_hint="--timeout")
    return value


def trust_file(path: Path) -> Path:
    """PEM roots that both readers take: the chain judge (cryptography) and ssl's verifier."""
    try:
        ssl.create_default_context(cafile=str(path))
        found = load_pem(path.read_bytes())
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise typer.BadParameter(f"{path}: {why}", param_hint="--trust-store") from None
    if not found:
        raise typer.BadParameter(f"{path}: no PEM certificate in it", param_hint="--trust-store")
    return path


def writable(path: Path, hint: str) -> Path:
    """A file the report can be written to, checked before the run (it failed only after
    the whole run): created, or opened for appending, then left as it was."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise typer.BadParameter(f"{path}: {exc.strerror or exc}", param_hint=hint) from None
    if not existed:
        path.unlink(missing_ok=True)
    return path


def print_me_or_them(out: Console, who: dict[str, str | list[str]]) -> None:
    """The verdict line first, then what it rests on and what could not be read."""
    out.print(f"\n[bold {SIDES[str(who['side'])]}]Is it me or them?[/] "
              f"[bold]{escape(str(who['line']))}[/]")
    for line in who["evidence"]:
        out.print(then("  [dim]·[/] ", line))
    for line in who["unread"]:
        out.print(then("  [dim]· could not read:[/] ", line))


def ask(console: Console, question: str) -> bool | None:
    answer = console.input(f"{question} [y/n, Enter to skip] ").strip().lower()
    return {"y": True, "yes": True, "n": False, "no": False}.get(answer)


def doctor(
    url: Annotated[str | None, typer.Argument(
        help="The service: a gatehouse URL (default $GATEHOUSE_URL or http://127.0.0.1:8787), "
             "or an API base for --profile openai.")] = None,
    profile: Annotated[ProfileName, typer.Option(help="Which hosts and pages to check.")
                       ] = ProfileName.gatehouse,
    status_url: Annotated[str | None, typer.Option(
        help="A Statuspage v2 summary.json (default: the profile's).")] = None,
    component: Annotated[list[str] | None, typer.Option(
        help="A status component that matters (repeat; default: API and the model).")] = None,
    api_key: Annotated[str | None, typer.Option(
        help="Default $GATEHOUSE_API_KEY, then $OPENAI_API_KEY.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="The model to try (default: the first GET /v1/models lists).")] = None,
    host: Annotated[list[str] | None, typer.Option(
        help="Check these hosts (host, host:port or URL; repeat) instead of the profile's.")
                    ] = None,
    har: Annotated[Path | None, typer.Option(help="A HAR file saved from the browser.")] = None,
    tried_private_window: Annotated[YesNo | None, typer.Option(
        help="Did it fail in a private window / clean profile too?")] = None,
    tried_other_network: Annotated[YesNo | None, typer.Option(
        help="Did it fail on another network (mobile data, VPN off) too?")] = None,
    conversation_url: Annotated[str | None, typer.Option(
        help="The conversation URL, for the report.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the Markdown report here.")] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the JSON report to this file, or '-' for stdout.")] = None,
    trust_store: Annotated[Path | None, typer.Option(
        help="PEM roots to judge certificate chains and verify HTTPS by (default: certifi's "
             "public CAs).")] = None,
    request_id: Annotated[list[str] | None, typer.Option(
        "--request-id", help="A failed request's id (x-request-id, req_…) to look up: at which "
                             "stage it failed (repeat; up to 10).")] = None,
    skip: Annotated[list[Step] | None, typer.Option(help="Leave a check out (repeat).")
                    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 20.0,
    no_input: Annotated[bool, typer.Option(
        "--no-input", help="Never ask questions (asked only when stdin is a terminal).")] = False,
) -> None:
    """Diagnose why requests fail: status page, network and TLS, API path, web path, HAR."""
    out = Console(stderr=json_out == "-")
    asked = request_ids(request_id or [])
    base = url or (os.environ.get("GATEHOUSE_URL") if profile is ProfileName.gatehouse else None)
    if base is not None:
        service_url(base, "URL" if url else "$GATEHOUSE_URL")
    if status_url is not None:
        service_url(status_url, "--status-url")
    endpoints = [endpoint(h) for h in host] if host else None
    seconds(timeout)
    if trust_store is not None:
        trust_file(trust_store)
    if report is not None:
        writable(report, "--report")
    if json_out is not None and json_out != "-":
        writable(Path(json_out), "--json")
    chosen = profile_for(profile.value, base)
    answers = Answers(
        private_window=None if tried_private_window is None else tried_private_window is YesNo.yes,
        other_network=None if tried_other_network is None else tried_other_network is YesNo.yes,
        conversation_url=conversation_url)
    if sys.stdin.isatty() and not no_input:
        if answers.private_window is None:
            answers.private_window = ask(out, "Did it fail in a private (incognito) window too?")
        if answers.other_network is None:
            answers.other_network = ask(out, "Did it fail on another network too?")
    key = api_key or os.environ.get("GATEHOUSE_API_KEY") or os.environ.get("OPENAI_API_KEY")
    checkup = Checkup(
        profile=chosen, url=base or (DEFAULT_URL if profile is ProfileName.gatehouse
                                     else chosen.api_base),
        status_url=status_url or chosen.status_url, components=tuple(component or ()),
        api_key=key, model=model,
        endpoints=endpoints or list(chosen.endpoints),
        har=har, answers=answers, trust_file=trust_store, timeout=timeout,
        skip=frozenset(s.value for s in skip or ()), request_ids=asked)
    progress = RichProgress(out)
    try:
        with progress.bar:
            _, verdict, result = asyncio.run(diagnose(checkup, progress))
    except HarError as exc:
        out.print(then("[bold red]HAR[/] ", str(exc)))
        raise typer.Exit(2) from None
    print_me_or_them(out, result["me_or_them"])
    colour = "green" if verdict.exit_code == 0 else "yellow" if verdict.exit_code == 10 else "red"
    out.print(f"\n[bold {colour}]{escape(verdict.headline)}[/]")
    out.print(f"Branch: [bold]{BRANCHES[verdict.branch.value]}[/] (exit {verdict.exit_code})")
    out.print(then("Next step: ", verdict.next_step))
    out.print(then("Stop when: ", verdict.stop_when))
    if report is not None:
        report.write_text(render(result))
        out.print(f"Report: {report}")
    if json_out is not None:
        data = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        if json_out == "-":
            typer.echo(data)
        else:
            Path(json_out).write_text(data + "\n")
            out.print(f"JSON: {json_out}")
    raise typer.Exit(verdict.exit_code)
