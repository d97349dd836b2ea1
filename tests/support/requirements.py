"""What the suite needs besides Python, checked once at the start (tests/conftest.py): a
missing piece stops the run with the command that provides it — never a silent skip."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from tests.support.services import PG_URL, REDIS_URL

CHROMIUM = "/usr/bin/chromium"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NODE_TESTS = Path(__file__).resolve().parents[1] / "node"  # tests/e2e/test_node_sdk.py's client
HOW = "On Debian, `sudo bash .ci/services` installs and starts them; then run the tests again."


def _listening(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def missing() -> list[str]:
    """What is absent, each as a line a person can act on."""
    gaps = []
    if not _listening(PG_URL, 5432):
        gaps.append(f"PostgreSQL is not answering at {urlparse(PG_URL).netloc} "
                    "(set GATEHOUSE_TEST_PG to use another)")
    if not _listening(REDIS_URL, 6379):
        gaps.append(f"Redis is not answering at {urlparse(REDIS_URL).netloc} "
                    "(set GATEHOUSE_TEST_REDIS to use another)")
    if not Path(CHROMIUM).exists():
        gaps.append(f"Chromium is not at {CHROMIUM} (Debian package chromium)")
    if NGINX is None:
        gaps.append("nginx is not installed (Debian package nginx-light)")
    if shutil.which("curl") is None:
        gaps.append("curl is not installed")
    gaps += _node_gaps()
    from gatehouse.quota import o200k

    if not o200k.built():
        gaps.append("gatehouse's token counter (gatehouse/quota/_o200k.c) was not built at "
                    "install: " + o200k.REBUILD)
    return gaps


def _node_gaps() -> list[str]:
    """Node.js 18+ (Debian 12's) and the openai package at the version
    tests/node/package-lock.json pins (4.x: the newest line that runs on Node 18)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return ["Node.js is not installed (Debian packages nodejs npm)"]
    version = subprocess.run(["node", "--version"], capture_output=True, text=True,
                             check=True).stdout
    if int(version.lstrip("v").split(".")[0] or 0) < 18:
        return [f"Node.js {version.strip()} is too old: the openai package needs 18 or newer"]
    pinned = json.loads((NODE_TESTS / "package-lock.json").read_text())[
        "packages"]["node_modules/openai"]["version"]
    installed = NODE_TESTS / "node_modules" / "openai" / "package.json"
    have = json.loads(installed.read_text())["version"] if installed.exists() else None
    if have != pinned:
        found = "not installed" if have is None else f"{have}, not {pinned} as pinned"
        fix = "run `npm ci --prefix tests/node`"
        return [f"the Node openai package in tests/node is {found}: {fix}"]
    return []
