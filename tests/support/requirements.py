"""What the suite needs besides Python, checked once at the start (tests/conftest.py): a
missing piece stops the run with the command that provides it — never a silent skip."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

from tests.support.services import PG_URL, REDIS_URL

CHROMIUM = "/usr/bin/chromium"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
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
    return gaps
