"""A real nginx (installed by .ci/services), run unprivileged on 127.0.0.1 with a configuration
of the test's own: ``running_nginx(tmp, http)`` wraps ``http`` (the http-context directives:
upstreams and servers) in a main configuration that keeps every file in ``tmp``."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import requirements

NGINX = requirements.NGINX or "nginx"  # present: tests/conftest.py checks before the run
SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "gatehouse.conf"
MAIN = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{http}
}}
"""


def shipped_site(port: int, replicas: list[int]) -> str:
    """The shipped site configuration (deploy/nginx/gatehouse.conf) listening on
    127.0.0.1:``port``, its upstream block listing these replica ports (any number of them)."""
    site = SHIPPED.read_text()
    lines = re.findall(r"^ *server 127\.0\.0\.1:\d+ .*\n", site, re.MULTILINE)
    assert lines and "listen 80;" in site, "deploy/nginx/gatehouse.conf changed shape"
    first = lines[0]
    site = site.replace("".join(lines), "".join(
        re.sub(r"127\.0\.0\.1:\d+ ", f"127.0.0.1:{r} ", first) for r in replicas))
    return site.replace("listen 80;", f"listen 127.0.0.1:{port};")


@contextlib.contextmanager
def running_nginx(tmp: Path, http: str, probe: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``http`` in its http block, once ``probe`` (a URL through it) answers."""
    conf = tmp / "nginx.conf"
    conf.write_text(MAIN.format(tmp=tmp, http=http))
    with (tmp / "nginx.out").open("wb") as out:
        proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(probe, timeout=0.5)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("nginx did not start: "
                                    + (tmp / "nginx-error.log").read_text())
                    time.sleep(0.05)
            yield proc
        finally:
            proc.kill()
            proc.wait(10)
