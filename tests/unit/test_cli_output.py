"""What the CLI prints is the truth, whole and in order: every configuration problem as
written, list ids never cut, ``--json`` on every list, ``init`` in order in a pipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatehouse.cli.main import app

runner = CliRunner()


@pytest.fixture
def config(cli_config: Path) -> Path:
    return cli_config


def run(*args: str, code: int = 0, columns: int = 80) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(columns)})
    assert result.exit_code == code, result.output
    return result.stdout if "--json" in args else result.output  # notes go to stderr


def test_check_prints_every_problem_exactly_as_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.m]\nbackends = ["nope"]\n')
    said = run("check", "--config", str(bad), code=2, columns=200)
    # Rich used to eat "[upstreams.nope]" as markup
    assert "models.m.backends.0.upstream: no [upstreams.nope] (known: none defined)" in said
    bad.write_text("[server]\nport = 0\nworkers = 0\nbogus = 1\n")
    lines = run("check", "--config", str(bad), code=2, columns=200).strip().splitlines()
    assert len(lines) == 3 and "more problem" not in " ".join(lines)
    assert [line.split(": ")[1] for line in lines] == ["server.port", "server.workers",
                                                       "server.bogus"]


@pytest.mark.parametrize("what", ["orgs", "projects", "keys", "users", "tiers", "rules", "bans",
                                  "limits"])
def test_every_list_has_json(config: Path, what: str) -> None:
    run("migrate", "--config", str(config))  # a list makes no store: it says there is none
    rows = json.loads(run(what, "list", "--json", "--config", str(config)))
    assert isinstance(rows, list)
    if what == "tiers":
        assert {"tier", "kind", "may_request", "description"} <= set(rows[0])


def test_key_ids_are_never_cut_and_json_has_raw_values(config: Path) -> None:
    run("orgs", "create", "acme-corporation-with-a-long-name", "--config", str(config))
    run("projects", "create", "acme-corporation-with-a-long-name/support-bot-for-europe",
        "--config", str(config))
    run("keys", "create", "acme-corporation-with-a-long-name/support-bot-for-europe",
        "--name", "a rather long label for this key", "--config", str(config))
    rows = json.loads(run("keys", "list", "--json", "--config", str(config)))
    (key,) = rows
    assert key["id"].startswith("key_") and key["tier"] is None and key["expires"] is None
    assert key["created"].endswith("Z") and key["status"] == "active"
    table = run("keys", "list", "--config", str(config), columns=80)
    assert key["id"] in table  # whole, on one line, at 80 columns


def test_init_prints_labels_and_keys_in_order_on_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", "--config", str(tmp_path / "gatehouse.toml")],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[0].startswith("# admin key") and lines[1].startswith("gh-admin-")
    assert lines[2].startswith("# API key for default/demo") and lines[3].startswith("gh-demo-")


def test_doctor_marks_a_failed_probe_as_failed() -> None:
    from io import StringIO

    from rich.console import Console

    from gatehouse.cli.doctor import RichProgress
    from gatehouse.doctor.api import ApiResult, Call
    from gatehouse.doctor.run import describe

    refused = ApiResult("http://x/v1", None, None,
                        calls=[Call("GET /v1/models", "unauthorized", 401, 0.01)])
    served = ApiResult("http://x/v1", None, None,
                       calls=[Call("GET /v1/models", "ok", 200, 0.01)])
    assert describe(refused) == ("GET /v1/models → 401 unauthorized", False)
    assert describe(served)[1] is True
    screen = StringIO()
    progress = RichProgress(Console(file=screen, width=120))
    progress.started("api")
    progress.finished("api", *describe(refused))
    assert "✗ API path: GET /v1/models → 401 unauthorized" in screen.getvalue()
    assert "✓" not in screen.getvalue()


def test_doctor_prints_findings_exactly_as_they_are() -> None:
    """Brackets stay text, and a trailing backslash (a Windows folder) is printed once, at the
    end of a line as before a closing tag."""
    from io import StringIO

    from rich.console import Console

    from gatehouse.cli.doctor import RichProgress, print_me_or_them

    screen = StringIO()
    out = Console(file=screen, width=200)
    progress = RichProgress(out)
    progress.started("network")
    progress.finished("network", "no trust store at C:\\certs\\", ok=False)
    print_me_or_them(out, {"side": "you", "line": "your proxy [corp] at C:\\proxy\\",
                           "evidence": ["read C:\\har\\", "[bold]not markup[/]"],
                           "unread": ["D:\\logs\\"]})
    lines = [line.rstrip() for line in screen.getvalue().splitlines()]
    assert lines[0].endswith(": no trust store at C:\\certs\\")
    assert lines[-4].endswith("Is it me or them? your proxy [corp] at C:\\proxy\\")
    assert lines[-3:] == ["  · read C:\\har\\", "  · [bold]not markup[/]",
                          "  · could not read: D:\\logs\\"]


def test_check_never_prints_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "secrets.toml"
    config.write_text(
        '[identity]\nsecret = "server-secret-0123456789-abcdefghijklmnop"\n'
        '[storage]\ndatabase_url = "postgresql+asyncpg://gh:db-password-1@db:5432/gh"\n'
        'state_url = "redis://:redis-password-2@cache:6379/0"\n'
        '[upstreams.vllm]\nbase_url = "http://10.0.0.5:8000/v1"\n'
        'headers = { authorization = "Bearer upstream-token-3" }\n'
        '[models.m]\nbackends = [{ upstream = "vllm" }]\n'
        '[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\n'
        'otlp_headers = { "x-api-key" = "collector-key-4" }\n')
    said = run("check", "--config", str(config), columns=200)
    for secret in ("server-secret", "db-password-1", "redis-password-2", "upstream-token-3",
                   "collector-key-4"):
        assert secret not in said, secret
    shown = json.loads(said[said.index("{"):])
    assert shown["storage"]["database_url"] == "postgresql+asyncpg://gh:***@db:5432/gh"
    assert shown["storage"]["state_url"] == "redis://:***@cache:6379/0"
    assert shown["identity"]["secret"] == "(hidden)"
    assert shown["upstreams"]["vllm"]["headers"] == {"authorization": "(hidden)"}


def test_a_deeply_nested_config_is_one_line_and_status_2(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 2000 + "]" * 2000 + "\n")
    said = run("check", "--config", str(deep), code=2, columns=200)
    assert said.strip() == (f"configuration error {deep}: a value (line 1) is nested more "
                            "than 32 levels of tables and arrays deep")
