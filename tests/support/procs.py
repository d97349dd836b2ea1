"""Real processes for end-to-end tests: the test upstream and the gateway, on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# seconds a test gives an admin API call: a worker builds its admin app on the first one
# (docs/configuration.md, admin_at_start), ~0.6 s on a quick 2-core VM and over httpx's 5-s
# default on a slow one running the whole suite (seen: test_status.py's first listing)
ADMIN_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{url} did not come up in {timeout}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Upstream:
    """``python -m gatehouse.testing.upstream_server`` in its own process."""

    def __init__(self, name: str, tmp: Path, **flags: Any) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"upstream-{name}.log"
        args = [sys.executable, "-m", "gatehouse.testing.upstream_server", "--port",
                str(self.port), "--name", name]
        for key, value in flags.items():
            flag = f"--{key.replace('_', '-')}"
            args += [flag] if value is True else [flag, str(value)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _wait_http(self.url + "/_stats", self.proc, self.log)

    def control(self, **behaviour: Any) -> None:
        httpx.post(self.url + "/_control", json=behaviour).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.url + "/_reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/_stats").json()
        return data

    def stop(self) -> None:
        stop(self.proc)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_toml(path: Path, config: dict[str, Any]) -> None:
    lines: list[str] = []

    def section(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if scalars and prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {toml_value(value)}")
        for key, value in tables.items():
            section(f"{prefix}.{key}" if prefix else key, value)

    section("", config)
    path.write_text("\n".join(lines) + "\n")


_GATEWAYS = itertools.count()  # this process's gateways, numbered


class Gateway:
    """``gatehouse serve`` in its own process, with its access log captured."""

    def __init__(self, tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None,
                 workers: int = 1, start_timeout: float = 180) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # a port comes back once the system's ephemeral range wraps (tens of thousands of
        # connections in a long run): the files are named for this gateway alone, or a later
        # one on the same port would find an earlier one's store (its orgs, its keys)
        name = f"{self.port}-{next(_GATEWAYS)}"
        self.config_path = tmp / f"gatehouse-{name}.toml"
        # each gateway gets its own store and secret unless the test shares them; keys are
        # optional unless the test asks for them (the core tests are not about identity)
        config = dict(config)
        self.db_path = tmp / f"gh-{name}.db"  # the store's file, unless the test names another
        config["storage"] = {"database_url": f"sqlite+aiosqlite:///{self.db_path}",
                             **config.get("storage", {})}
        config["identity"] = {"require_key": False,
                              "secret_file": str(tmp / f"secret-{name}"),
                              **config.get("identity", {})}
        # every test connects from 127.0.0.1, and with a shared Redis one test's 401s would
        # get it banned in all the others: the abuse detector runs only where a test sets it
        config["edge"] = {"detector": {"enabled": False}, **config.get("edge", {})}
        # the test upstream counts words, and loading o200k costs each process a second or
        # more: the gateway counts words too, unless a test names a tokenizer
        config["quota"] = {"tokenizer": "words", **config.get("quota", {})}
        write_toml(self.config_path, config)
        self.log = tmp / f"gateway-{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gatehouse", "serve", "--config", str(self.config_path),
                 "--port", str(self.port), "--workers", str(workers)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _wait_http(self.url + "/healthz", self.proc, self.log, start_timeout)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def record(self, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.records():
                if rec["request_id"] == request_id:
                    return rec
            time.sleep(0.05)
        raise AssertionError(f"no access-log record for {request_id}")

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        total = 0.0
        found = False
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
                found = True
        if not found and labels:
            return 0.0
        return total

    def stop(self) -> None:
        stop(self.proc)


@dataclass(slots=True)
class Stream:
    """A streamed answer read up to its first event and held open."""

    client: httpx.Client
    response: httpx.Response
    chunks: Iterator[bytes]  # held: dropping the iterator would close the connection

    def drain(self) -> None:
        for _ in self.chunks:
            pass
        self.close()

    def close(self) -> None:
        self.response.close()
        self.client.close()


def open_stream(gw: Gateway, key: str, **body: Any) -> Stream:
    """Start a streamed chat completion of the demo model and read up to its first event."""
    client = httpx.Client(timeout=30)
    request = client.build_request(
        "POST", gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
        json={"model": "demo", "messages": [{"role": "user", "content": "hello"}],
              "stream": True, **body})
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()
    first = b""
    chunks = response.iter_raw()
    while b"data:" not in first:
        first += next(chunks)
    return Stream(client, response, chunks)
