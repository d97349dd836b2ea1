"""The account CLI, run in-process (typer's runner) on a throwaway SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatehouse.cli.main import app
from gatehouse.config import load_settings
from gatehouse.identity.service import IdentityService
from gatehouse.state.memory import MemoryState
from gatehouse.store.db import head_revision

runner = CliRunner()


@pytest.fixture
def config(cli_config: Path) -> Path:
    return cli_config


def run(config: Path, *args: str, stdin: str | None = None, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)], input=stdin,
                           env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def printed_key(output: str) -> str:
    """The key a ``keys create`` / ``rotate`` printed (notes may follow on stderr)."""
    return next(line for line in output.splitlines() if line.startswith("gh-"))


def verify(config: Path, key: str) -> bool:
    async def go() -> bool:
        ids = IdentityService(load_settings(config))
        try:
            return await ids.verifier.verify(key) is not None
        finally:
            await ids.aclose()
    return asyncio.run(go())


def test_orgs_projects_keys(config: Path) -> None:
    assert "created org acme" in run(config, "orgs", "create", "acme")
    assert "no tier named 'gold'" in run(config, "orgs", "create", "beta", "--tier", "gold",
                                         code=1)
    assert "web tier" in run(config, "orgs", "create", "beta", "--tier", "plus", code=1)
    assert "already exists" in run(config, "orgs", "create", "acme", code=1)
    run(config, "projects", "create", "acme/bot")
    assert "acme/bot" in run(config, "projects", "list", "acme")
    assert "ORG/PROJECT" in run(config, "projects", "create", "acme", code=1)

    key = printed_key(run(config, "keys", "create", "acme/bot", "--tier", "priority", "--name", "ci",
              "--expires", "30d"))
    assert key.startswith("gh-bot-") and verify(config, key)
    listing = run(config, "keys", "list", "acme/bot")
    assert key not in listing and key[-4:] in listing and "priority" in listing
    assert "expires" in listing
    assert "not a duration" in run(config, "keys", "create", "acme/bot", "--expires", "soon",
                                   code=2)
    # found by hypothesis (tests/robust): an endless lifetime made a key that `keys list`
    # then crashed on (OverflowError printing its expiry)
    assert "at most 3660 days" in run(config, "keys", "create", "acme/bot", "--expires",
                                      "99999999999999w", code=2)
    assert "more than 0s" in run(config, "keys", "create", "acme/bot", "--expires", "0s",
                                 code=2)
    key_id = next(w for w in listing.split() if w.startswith("key_"))

    assert "at most 30 days" in run(config, "keys", "rotate", key_id, "--grace", "31d", code=2)
    rotated = printed_key(run(config, "keys", "rotate", key_id, "--grace", "1h"))
    assert rotated != key and verify(config, rotated) and verify(config, key)  # grace
    assert "revoked" in run(config, "keys", "revoke", key_id)
    assert not verify(config, key)
    assert "no key with id" in run(config, "keys", "revoke", "key_nope", code=1)

    admin = printed_key(run(config, "keys", "create", "--admin"))
    assert admin.startswith("gh-admin-")
    assert "(admin)" in run(config, "keys", "list", "--admin")

    run(config, "orgs", "set-tier", "acme", "flex")
    assert "flex" in run(config, "orgs", "list")


def test_users(config: Path, live_state: MemoryState) -> None:
    run(config, "orgs", "create", "acme")
    out = run(config, "users", "create", "Ann@Example.com", "--org", "acme", "--tier", "plus",
              "--password-stdin", stdin="correct horse battery\n")
    assert "created user ann@example.com" in out
    assert "at least 10" in run(config, "users", "create", "bob@example.com",
                                "--password-stdin", stdin="short\n", code=1)
    assert "api tier" in run(config, "users", "create", "bob@example.com", "--tier", "priority",
                             "--password-stdin", stdin="long enough password\n", code=1)
    assert "ann@example.com" in run(config, "users", "list")
    run(config, "users", "set-tier", "ann@example.com", "pro")
    assert "ended 0 session(s)" in run(config, "users", "logout", "ann@example.com")
    assert "disabled" in run(config, "users", "disable", "ann@example.com")
    listing = run(config, "users", "list")
    assert "pro" in listing and "disabled" in listing
    assert "no user" in run(config, "users", "logout", "nobody@example.com", code=1)


def test_tiers_and_migrate(config: Path) -> None:
    listing = run(config, "tiers", "list")
    for name in ("free", "plus", "pro", "standard", "priority", "flex"):
        assert name in listing
    # a fresh store is migrated and says so; a second run finds nothing to do
    head = head_revision()
    assert f"store migrated to revision {head}" in run(config, "migrate")
    assert f"store is up to date (revision {head})" in run(config, "migrate")


def test_bad_config_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[storage]\ndatabase_url = "mysql://x"\n')
    assert "storage.database_url" in run(bad, "orgs", "list", code=2)


def test_users_create_refuses_a_control_character_in_the_email(config: Path) -> None:
    # a NUL reached the store (PostgreSQL refuses it in text: a driver error, not a clear one)
    for email in ("ada\x00@example.com", "ada\x1b[2J@example.com"):
        said = run(config, "users", "create", email, "--password-stdin",
                   stdin="a long password\n", code=1)
        assert "is not an email address" in said and "Traceback" not in said
    assert "ada" not in run(config, "users", "list")


@pytest.mark.parametrize("command", [["keys", "list"], ["orgs", "list"], ["rules", "list"],
                                     ["bans", "list"], ["incidents", "list"], ["health"],
                                     ["usage", "acme"], ["requests", "show", "req_x"]])
def test_commands_that_read_make_no_store(tmp_path: Path, command: list[str]) -> None:
    """Found by a review: ``keys list`` on a store in a folder that does not exist made the
    folders, the SQLite file and the secret file, and listed nothing."""
    config = tmp_path / "gatehouse.toml"
    config.write_text('[storage]\ndatabase_url = "sqlite+aiosqlite:///missing/dir/g.db"\n')
    said = " ".join(run(config, *command, code=1).split())
    assert said == (f"error there is no store at {tmp_path}/missing/dir/g.db yet: `gatehouse "
                    "init` makes it (and the first keys; an existing gatehouse.toml is kept), "
                    "`gatehouse migrate` makes the store alone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gatehouse.toml"]
    run(config, "migrate")
    assert (tmp_path / "missing" / "dir" / "g.db").exists()


@pytest.mark.parametrize("args, said", [
    (["orgs", "create", "a" * 5000], "an org name is at most 64 characters; this one has 5000"),
    (["orgs", "set-tier", "a" * 65, "free"], "an org name is at most 64 characters"),
    (["projects", "create", "a" * 5000], "ORG/PROJECT is at most 129 characters"),
    (["keys", "create", "acme/bot", "--name", "n" * 5000],
     "a key's name is at most 128 characters"),
    (["keys", "revoke", "k" * 5000], "a key id is at most 64 characters"),
    (["users", "logout", "u" * 5000], "an email address is at most 254 characters"),
    (["rules", "add", "deny", "--cidr", "192.0.2.1", "--note", "n" * 5000],
     "a rule's note is at most 256 characters"),
    (["rules", "add", "deny", "--cidr", "192.0.2.1", "--name", "n" * 65],
     "a rule's name is at most 64 characters"),
    (["rules", "remove", "r" * 5000], "a rule id is at most 64 characters"),
    (["bans", "add", "192.0.2.1", "--reason", "r" * 5000],
     "a ban's reason is at most 200 characters"),
])
def test_over_long_names_are_refused_with_the_limit_not_echoed(
        config: Path, args: list[str], said: str) -> None:
    """Found by a review: a 5,000-character name was echoed whole (and a key's name, a rule's
    note were stored) — the admin API's bounds, applied before anything is done."""
    output = run(config, *args, code=2)
    assert said in " ".join(output.replace("│", " ").split())
    assert "a" * 100 not in output and "n" * 300 not in output and "r" * 300 not in output
    assert not (config.parent / "gh.db").exists()  # refused before the store was opened
