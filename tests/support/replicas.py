"""N gateway replicas on one configuration (one PostgreSQL, one Redis, one secret) behind a real
nginx running the shipped site (deploy/nginx/gatehouse.conf), for the cluster fault tests.

    with replicas_behind_nginx(proc_dir, tmp, config, cli_config) as cluster:
        key = cluster.cli("keys", "create", "acme/bot")
        httpx.post(cluster.url + "/v1/chat/completions", ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_identity import cli
from tests.support.nginx import running_nginx, shipped_site
from tests.support.procs import Gateway, free_port, write_toml


@dataclass
class Replicas:
    url: str  # nginx
    gateways: list[Gateway]
    config: Path  # the CLI's

    def cli(self, *args: str) -> str:
        return cli(self.config, *args).strip()

    def metric(self, name: str, **labels: str) -> float:
        """A metric summed over the replicas still running."""
        return sum(gw.metric(name, **labels) for gw in self.gateways if gw.proc.poll() is None)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


@contextlib.contextmanager
def replicas_behind_nginx(proc_dir: Path, tmp: Path, config: dict[str, Any],
                          cli_config: dict[str, Any] | None = None, count: int = 3
                          ) -> Iterator[Replicas]:
    """``count`` replicas on ``config`` (the first migrates the store, the others start
    together), the org ``acme`` and its project ``acme/bot`` made with the CLI on
    ``cli_config`` (default: ``config``)."""
    gateways: list[Gateway] = []
    try:
        gateways.append(Gateway(proc_dir, config))  # it migrates the store
        with ThreadPoolExecutor(count - 1 or 1) as pool:  # the others find it done
            starting = [pool.submit(Gateway, proc_dir, config) for _ in range(count - 1)]
        gateways += [f.result() for f in starting if f.exception() is None]  # (stopped below)
        for f in starting:
            f.result()  # one that did not start: its error
        path = tmp / "cli.toml"
        write_toml(path, cli_config or config)
        cli(path, "orgs", "create", "acme")
        cli(path, "projects", "create", "acme/bot")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with running_nginx(tmp, shipped_site(port, [gw.port for gw in gateways]),
                           url + "/healthz"):
            yield Replicas(url, gateways, path)
    finally:
        for gw in gateways:
            gw.stop()
        for gw in gateways:
            assert "Traceback" not in gw.log.read_text(), gw.log.read_text()[-3000:]
