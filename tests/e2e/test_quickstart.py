"""The README's quick start, literally, in an empty folder: ``gatehouse serve`` with no config,
the banner's example works, the written key works with the official SDK, and the CLI's
changes reach the running gateway within a second on the default ``memory://`` state."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.procs import _wait_http, free_port, stop

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")  # what `pip install -e .` put there


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    home = tmp_path_factory.mktemp("quickstart")
    port = free_port()
    log = home / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen([GATEHOUSE, "serve", "--port", str(port)], cwd=home, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/healthz", proc, log)
    yield home, url, log.read_text()
    stop(proc)


def cli(home: Path, *args: str, stdin: str | None = None, code: int = 0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    done = subprocess.run([GATEHOUSE, *args], cwd=home, env=env, input=stdin, text=True,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout + done.stderr


def within_a_second(check: Callable[[], bool]) -> None:
    """The change shows within 1 s of the CLI command returning."""
    deadline = time.monotonic() + 1.0
    while not check():
        assert time.monotonic() < deadline, "the running gateway did not apply it within 1 s"
        time.sleep(0.02)


def test_the_banner_example_and_the_first_key_work(
        quickstart: tuple[Path, str, str]) -> None:
    home, url, banner = quickstart
    # the keys went to a private file (output is not a terminal), said in one line
    keys = home / "gatehouse.first-keys"
    assert f"are in {keys} (mode 0600)" in banner
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    example = re.search(r"try: (curl .*)", banner)
    assert example, banner
    answer = subprocess.run(["bash", "-c", example.group(1) + " -sS"], cwd=home,
                            capture_output=True, text=True, timeout=30, check=True)
    assert '"id":"demo"' in answer.stdout, answer.stdout + answer.stderr
    api_key = keys.read_text().splitlines()[-1]
    client = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(model="demo",
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content and reply._request_id
    # nothing the gateway wrote would be committed
    subprocess.run(["git", "init", "-q"], cwd=home, check=True)
    (home / ".gitignore").write_text(
        (Path(__file__).resolve().parents[2] / ".gitignore").read_text())
    status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=home,
                            capture_output=True, text=True, check=True).stdout
    assert {line[3:] for line in status.splitlines()} <= {".gitignore", "serve.log"}


def test_bans_reach_the_running_gateway(quickstart: tuple[Path, str, str]) -> None:
    home, url, _ = quickstart
    cli(home, "bans", "add", "127.0.0.1", "--for", "12h")
    within_a_second(lambda: httpx.get(url + "/v1/models").status_code == 403)
    assert "127.0.0.1" in cli(home, "bans", "list")
    cli(home, "bans", "remove", "127.0.0.1")
    within_a_second(lambda: httpx.get(url + "/v1/models").status_code == 401)


def test_rules_reach_the_running_gateway(quickstart: tuple[Path, str, str]) -> None:
    home, url, _ = quickstart
    said = cli(home, "rules", "add", "deny", "--user-agent", "(?i)badbot")
    rule_id = re.search(r"(rule_\w+)", said)
    assert rule_id, said
    bad = {"user-agent": "BadBot/1.0"}
    within_a_second(lambda: httpx.get(url + "/healthz", headers=bad).status_code == 403
                    or httpx.get(url + "/v1/models", headers=bad).status_code == 403)
    assert httpx.get(url + "/v1/models").status_code == 401  # others are untouched
    cli(home, "rules", "remove", rule_id.group(1))
    within_a_second(lambda: httpx.get(url + "/v1/models", headers=bad).status_code == 401)


def test_revocation_reaches_the_running_gateway(quickstart: tuple[Path, str, str]) -> None:
    home, url, _ = quickstart
    made = cli(home, "keys", "create", "default/demo", "--name", "to revoke")
    key = next(line for line in made.splitlines() if line.startswith("gh-"))
    key_id = re.search(r"key (key_\w+)", made)
    assert key_id, made
    auth = {"authorization": f"Bearer {key}"}
    assert httpx.get(url + "/v1/models", headers=auth).status_code == 200  # now cached
    cli(home, "keys", "revoke", key_id.group(1))
    within_a_second(lambda: httpx.get(url + "/v1/models", headers=auth).status_code == 401)


def test_sign_outs_reach_the_running_gateway(quickstart: tuple[Path, str, str]) -> None:
    home, url, _ = quickstart
    cli(home, "users", "create", "ann@example.com", "--org", "default", "--password-stdin",
        stdin="correct horse battery staple\n")
    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        signed = browser.post("/login", data={"csrf": csrf.group(1),
                                              "email": "ann@example.com",
                                              "password": "correct horse battery staple"},
                              headers={"cookie": "; ".join(
                                  f"{k}={v}" for k, v in form.cookies.items())})
        assert signed.status_code == 303, signed.text
        session = "; ".join(c.split(";")[0] for c in signed.headers.get_list("set-cookie"))
        assert browser.get("/account", headers={"cookie": session}).status_code == 200
        assert "ended 1 session(s)" in cli(home, "users", "logout", "ann@example.com")
        within_a_second(
            lambda: browser.get("/account", headers={"cookie": session}).status_code != 200)


def test_a_sign_in_lock_is_lifted_from_the_cli(quickstart: tuple[Path, str, str]) -> None:
    home, url, _ = quickstart
    password = "correct horse battery staple"
    cli(home, "users", "create", "bob@example.com", "--org", "default", "--password-stdin",
        stdin=password + "\n")

    def sign_in(browser: httpx.Client, secret: str) -> httpx.Response:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        return browser.post("/login", data={"csrf": csrf.group(1), "email": "bob@example.com",
                                            "password": secret},
                            headers={"accept": "application/json"})

    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        for _ in range(6):  # past the 5 free failures: the account is locked
            sign_in(browser, "a wrong guess")
        locked = sign_in(browser, password)
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"]["code"] == "too_many_sign_ins"
        said = cli(home, "users", "unlock", "bob@example.com")
        assert "forgot the failed sign-ins of bob@example.com" in said
        assert sign_in(browser, password).status_code == 303  # at once, the right one works
    said = cli(home, "users", "unlock", "bob@example.com")
    assert "no failed sign-ins were counted" in said
    said = cli(home, "users", "unlock", "bob@example.com", "--address", "not-an-ip", code=2)
    assert "not an IP address" in said


def test_without_a_running_gateway_the_cli_says_so(tmp_path: Path) -> None:
    said = cli(tmp_path, "bans", "add", "203.0.113.7", "--for", "1h", code=1)
    assert "not applied: no running gatehouse answered at" in said and "banned" not in said
    said = cli(tmp_path, "users", "logout", "nobody@example.com", code=1)
    assert "not applied" in said
    said = cli(tmp_path, "rules", "add", "deny", "--user-agent", "x")
    assert "no running gatehouse answered" in said and "applies when a gateway starts" in said
