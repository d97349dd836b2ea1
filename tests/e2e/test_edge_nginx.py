"""The client address through a real nginx on 127.0.0.1 (installed by .ci/run), run
unprivileged with a config of this test's own.

Clients bind to other loopback addresses (127.0.0.2, 127.0.0.3) so they are told apart from
nginx (127.0.0.1, the one trusted proxy): forged ``X-Forwarded-For`` entries change nothing,
the address nginx appends is the one the edge, its rules and the access log use, and the same
header sent straight to the gateway by an untrusted peer is ignored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nginx import running_nginx
from tests.support.procs import Gateway, free_port

SITE = """\
    upstream gatehouse {{ server 127.0.0.1:{backend}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gatehouse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
"""


@pytest.fixture
def nginx_in_front(start_gateway: Callable[..., Gateway], tmp_path: Path
                   ) -> Iterator[tuple[Gateway, str]]:
    gw = start_gateway({"edge": {"trusted_proxies": ["127.0.0.1/32"],
                                 "rules": [{"action": "deny", "cidr": "127.0.0.3",
                                            "name": "blocked-client"}]}})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_nginx(tmp_path, SITE.format(backend=gw.port, port=port), url + "/healthz"):
        yield gw, url


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_forged_forwarded_for_changes_nothing_through_nginx(
        nginx_in_front: tuple[Gateway, str]) -> None:
    gw, url = nginx_in_front
    with client_from("127.0.0.2") as c:
        r = c.get(url + "/v1/models", headers={"x-forwarded-for": "127.0.0.3, 203.0.113.9"})
        assert r.status_code == 200  # the forged (denied) address was not believed
        assert gw.record(r.headers["x-request-id"])["client"] == "127.0.0.2"
    with client_from("127.0.0.3") as c:
        r = c.get(url + "/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
        # no escape by forging either
        assert r.status_code == 403 and r.json()["error"]["code"] == "1020"
        assert gw.record(r.headers["x-request-id"])["client"] == "127.0.0.3"
        page = c.get(url + "/login", headers={"accept": "text/html"})
        assert page.status_code == 403 and '<code id="client-ip">127.0.0.3</code>' in page.text
    # straight to the gateway, the same header from an untrusted peer is not read at all
    with client_from("127.0.0.2") as c:
        r = c.get(gw.url + "/v1/models",
                  headers={"x-forwarded-for": "127.0.0.3"})
        assert r.status_code == 200
        assert gw.record(r.headers["x-request-id"])["client"] == "127.0.0.2"
