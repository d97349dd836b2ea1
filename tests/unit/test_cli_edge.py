"""``gatehouse rules | bans | rays`` in-process on a throwaway SQLite store; bans go to a
running gateway's memory state over its socket (``live_state``)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from gatehouse.config import load_settings
from gatehouse.edge.rays import new_ray
from gatehouse.identity.service import IdentityService
from gatehouse.state.memory import MemoryState
from gatehouse.store.edge import EdgeRecords
from tests.support.services import REDIS_URL
from tests.unit.test_cli_accounts import config, run  # noqa: F401  (the fixture)
from tests.unit.test_serving import serve_env


def test_rules(config: Path) -> None:  # noqa: F811
    config.write_text(config.read_text() + '[[edge.rules]]\naction = "allow"\n'
                      'cidr = "10.0.0.0/8"\nname = "office"\n')
    out = run(config, "rules", "add", "deny", "--cidr", "192.0.2.0/24", "--cidr",
              "2001:db8::/32", "--note", "spam")
    assert "added rule rule_" in out and "position 0" in out
    run(config, "rules", "add", "challenge", "--path", "^/login", "--difficulty", "12",
        "--position", "0")
    listing = run(config, "rules", "list")
    lines = [line for line in listing.splitlines() if "rule_" in line or "office" in line]
    assert "office" in lines[0] and "challenge" in lines[1] and "deny" in lines[2]
    assert "invalid" not in run(config, "rules", "add", "deny", "--path", "((", code=1) \
        and "not a valid regular expression" in run(config, "rules", "add", "deny", "--path",
                                                    "((", code=1)
    assert "at least one condition" in run(config, "rules", "add", "deny", code=1)
    # found by a review: these were stored, and the gateway then logged "cannot be read"
    # on every look at its lists
    (config.parent / "folder").mkdir()
    (config.parent / "binary.dat").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff")
    (config.parent / "spammers.txt").write_text("192.0.2.0/24\n")
    for name, said in [("missing.txt", "does not exist"), ("folder", "is a directory"),
                       ("binary.dat", "is not a text file (byte 7)")]:
        assert f"list: {config.parent / name} {said}" in run(
            config, "rules", "add", "deny", "--list", name, code=1)
    assert "list=spammers.txt" in run(config, "rules", "add", "deny", "--list", "spammers.txt")
    lines = [line for line in run(config, "rules", "list").splitlines() if "deny" in line]
    rule_id = next(w for w in lines[0].split() if w.startswith("rule_"))
    assert f"removed rule {rule_id}" in run(config, "rules", "remove", rule_id)
    assert "no stored rule" in run(config, "rules", "remove", rule_id, code=1)


def test_bans(config: Path, live_state: MemoryState) -> None:  # noqa: F811
    out = run(config, "bans", "add", "192.0.2.7", "--for", "2h", "--reason", "spam")
    assert "banned 192.0.2.7 until" in out and "spam" in out
    assert "192.0.2.7" in run(config, "bans", "list")  # in the running gateway's state
    assert "not an address or CIDR" in run(config, "bans", "add", "example.com", code=1)
    assert "lifted the ban of 192.0.2.7" in run(config, "bans", "remove", "192.0.2.7")
    assert "is not banned" in run(config, "bans", "remove", "192.0.2.7", code=1)
    assert "not a duration" in run(config, "bans", "add", "192.0.2.7", "--for", "soon", code=2)
    assert "at most 366 days" in run(config, "bans", "add", "192.0.2.7", "--for", "367d",
                                     code=2)


def test_bans_without_a_running_gateway_are_refused(config: Path) -> None:  # noqa: F811
    said = run(config, "bans", "add", "192.0.2.7", "--for", "2h", code=1)
    assert "not applied: no running gatehouse answered" in said and "banned" not in said
    run(config, "migrate")  # `bans list` reads: it makes no store
    assert "no running gatehouse answered" in run(config, "bans", "list")


def test_rays_show(config: Path) -> None:  # noqa: F811
    ray = new_ray()

    async def store_one() -> None:
        ids = IdentityService(load_settings(config))
        await ids.start(serve=False)
        await EdgeRecords(ids.store).add_rays([(
            ray, 1_700_000_000.0, "deny", "192.0.2.7", "192.0.2.0/24", "spam", "rule spam",
            "GET", "/login", "curl/8")])
        await ids.aclose()

    asyncio.run(store_one())
    out = run(config, "rays", "show", ray.upper())
    for text in (ray, "192.0.2.7", "rule spam", "/login", "curl/8", "2023-11-14"):
        assert text in out
    assert "no Ray ID" in run(config, "rays", "show", "0" * 16, code=1)
    assert "16 hexadecimal" in run(config, "rays", "show", "xyz", code=2)


def test_bans_say_only_what_happened(tmp_path: Path) -> None:
    """Found by a review, run as a person runs it (a process: the edge's log lines reach the
    terminal): ``bans remove`` of an address not banned said "unbanned …" before the error,
    and ``bans add`` with Redis down "banned … until …" before the state layer's error."""
    with socket.socket() as closed:  # a port nothing listens on: Redis down
        closed.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    subject = f"198.51.100.{secrets.randbelow(250) + 1}"

    def bans(state_url: str, *args: str) -> subprocess.CompletedProcess[str]:
        toml = tmp_path / "gatehouse.toml"
        toml.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///gh.db"\n'
                        f'state_url = "{state_url}"\n[identity]\nsecret_file = "secret"\n')
        return subprocess.run([sys.executable, "-m", "gatehouse", "bans", *args, "--config",
                               str(toml)], env=serve_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)

    done = bans(REDIS_URL, "remove", subject)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (
        1, "", f"error {subject} is not banned")
    done = bans(down, "add", subject)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error the state layer failed"), done.stderr
    assert "banned" not in done.stderr
