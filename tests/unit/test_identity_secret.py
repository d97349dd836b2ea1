"""The server secret's file is made only for a store without API keys. Lost (deleted, not
mounted, not restored) while the store holds keys, ``serve`` and every command that reads it
refuse, naming it, and make nothing: a new secret refused every key with nothing said, and
even a read-only command wrote the new file the next ``serve`` used. SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gatehouse.config import ConfigError, Settings
from gatehouse.identity.keys import KeyMaterial
from gatehouse.identity.service import server_secret
from gatehouse.store.accounts import Accounts
from gatehouse.store.db import STORE_ERRORS, Store
from tests.support.procs import free_port
from tests.support.services import migrated_store, pg_database
from tests.unit.test_serving import serve_env, serving


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store of its own that ``gatehouse`` processes make and migrate themselves."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
        return
    with pg_database() as url:
        yield url


def settings_for(url: str, secret_file: Path) -> Settings:
    return Settings.model_validate({"storage": {"database_url": url},
                                    "identity": {"secret_file": str(secret_file)}})


def written_config(tmp: Path, url: str) -> Path:
    config = tmp / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = "{url}"\n'
                      f'[identity]\nsecret_file = "{tmp / "secret"}"\n'
                      '[quota]\ntokenizer = "words"\n')
    return config


def gatehouse(tmp: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatehouse", *args, "--config", str(config)],
                          env=serve_env(), cwd=tmp, capture_output=True, text=True,
                          timeout=180, check=False)


async def test_a_new_secret_only_for_a_store_without_keys(store: Store, tmp_path: Path) -> None:
    """Made for an empty store; refused once it holds a key — a revoked one too, made with
    the same lost secret — naming the file, with nothing left behind; the restored file is
    read again."""
    path = tmp_path / "secret"
    settings = settings_for(store.url.render_as_string(hide_password=False), path)
    first = server_secret(settings, store.schema)
    assert path.read_text().strip().encode() == first
    accounts = Accounts(store, KeyMaterial(first))
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/bot")
    _, row = await accounts.create_key("acme/bot")
    await accounts.revoke_key(row.id)
    path.unlink()
    with pytest.raises(ConfigError) as caught:
        server_secret(settings, store.schema)
    said = str(caught.value)
    assert said.startswith(f"defaults: identity.secret_file: the server secret file {path} "
                           "does not exist, but the store holds 1 API key (revoked ones "
                           "included)"), said
    assert "Restore the file from your backup" in said and "at least 32 characters" in said
    assert not path.exists()
    path.write_text(first.decode() + "\n")
    assert server_secret(settings, store.schema) == first


def test_a_store_that_cannot_say_whether_it_holds_keys_gets_no_secret(tmp_path: Path) -> None:
    """PostgreSQL not answering: its error, and no secret made that could be the wrong one."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = tmp_path / "secret"
    settings = settings_for(f"postgresql+asyncpg://gh@127.0.0.1:{port}/test", path)
    with pytest.raises(STORE_ERRORS):
        server_secret(settings)
    assert not path.exists()
    # a SQLite store that does not exist yet holds no keys: made, without making the store
    fresh = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'g.db'}", path)
    assert len(server_secret(fresh)) >= 32 and not (tmp_path / "new").exists()


def test_serve_and_the_cli_refuse_a_lost_secret(tmp_path: Path, store_url: str) -> None:
    """``init``, then the secret file lost: ``serve`` (before its banner), ``keys list``,
    ``health`` and ``init`` say so in one line, status 2, and leave no file; with the file
    restored, the keys are there again."""
    config = written_config(tmp_path, store_url)
    made = gatehouse(tmp_path, config, "init")
    assert made.returncode == 0, made.stderr
    secret = tmp_path / "secret"
    kept = secret.read_text()
    secret.unlink()
    for command in (["serve", "--port", str(free_port())], ["keys", "list"], ["health"],
                    ["init"]):
        done = gatehouse(tmp_path, config, *command)
        said = " ".join(done.stderr.split())  # Rich wraps long lines
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert f"configuration error {config}" in said, said  # (+ GATEHOUSE_* for serve)
        assert (f"identity.secret_file: the server secret file {secret} does not exist, but "
                "the store holds 2 API keys") in said, said
        assert "Traceback" not in done.stderr and " on http://" not in done.stderr
        assert not secret.exists(), command
    secret.write_text(kept)
    listed = gatehouse(tmp_path, config, "keys", "list", "--admin", "--json")
    assert listed.returncode == 0 and "first admin key" in listed.stdout, listed.stderr


def test_two_first_starts_at_once_share_one_secret(tmp_path: Path, store_url: str) -> None:
    """Two replicas starting together on a new store: one makes the secret, the other uses
    it, so the first API key (made by one of them) works on both."""
    config = written_config(tmp_path, store_url)
    ports = [free_port(), free_port()]
    procs, logs = [], []
    try:
        for port in ports:
            log = tmp_path / f"serve-{port}.log"
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "gatehouse", "serve", "--config", str(config),
                     "--port", str(port)], env=serve_env(), cwd=tmp_path, stdout=out,
                    stderr=subprocess.STDOUT))
            logs.append(log)
        for proc, log, port in zip(procs, logs, ports, strict=True):
            serving(proc, log, port)
        key = (tmp_path / "gatehouse.first-keys").read_text().splitlines()[-1]
        for port in ports:
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                               headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
