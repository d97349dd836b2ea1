from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.support.procs import Gateway, Upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _close_sdk_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every sync ``openai.OpenAI`` a test makes is closed after it: an unclosed one's pooled
    socket is found by the garbage collector later, in another test, whose ResourceWarning
    (an error here) then fails that innocent test — more often with several workers."""
    made: list[openai.OpenAI] = []
    original = openai.OpenAI.__init__

    def init(self: openai.OpenAI, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(openai.OpenAI, "__init__", init)
    yield
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def proc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("procs")


@pytest.fixture(scope="session")
def up_a(proc_dir: Path) -> Iterator[Upstream]:
    up = Upstream("a", proc_dir)
    yield up
    up.stop()


@pytest.fixture(scope="session")
def up_b(proc_dir: Path) -> Iterator[Upstream]:
    up = Upstream("b", proc_dir)
    yield up
    up.stop()


@pytest.fixture(autouse=True)
def _healthy_upstreams(request: pytest.FixtureRequest) -> None:
    for name in ("up_a", "up_b"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def upstream_cfg(up: Upstream, **extra: Any) -> dict[str, Any]:
    return {"base_url": up.url + "/v1", **extra}


@pytest.fixture
def start_gateway(proc_dir: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Gateway:
        gw = Gateway(proc_dir, config, **kwargs)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def shared_gateway(proc_dir: Path, up_a: Upstream, up_b: Upstream) -> Iterator[Gateway]:
    """One gateway for tests that do not change breaker state: model ``m`` on a then b."""
    gw = Gateway(proc_dir, {
        "upstreams": {"a": upstream_cfg(up_a), "b": upstream_cfg(up_b)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]},
                   "ab": {"backends": [{"upstream": "a", "weight": 1000},
                                       {"upstream": "b", "weight": 0.001}]}},
    })
    yield gw
    gw.stop()


@dataclass(frozen=True, slots=True)
class KeyedGateway:
    """A gateway that requires keys, with model ``m`` on upstream a, and two project keys."""

    gw: Gateway
    key: str  # tier standard: unlimited
    limited_key: str  # tier one: one request a minute

    @property
    def api(self) -> str:
        return self.gw.url + "/v1"


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory,
                  up_a: Upstream) -> Iterator[KeyedGateway]:
    """One per module, for clients that are not ours: the first run's keys (written beside
    the secret, in a folder of the module's own) and a rate-limited key made through the admin
    API — no CLI process."""
    home = tmp_path_factory.mktemp("keyed")
    gw = Gateway(home, {
        "identity": {"require_key": True},
        "tiers": {"standard": {}, "one": {"limits": {"requests_per_minute": 1}}},
        "upstreams": {"a": upstream_cfg(up_a)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
    })
    admin, key = [line for line in (home / "gatehouse.first-keys").read_text().splitlines()
                  if not line.startswith("#")]
    made = httpx.post(gw.url + "/admin/v1/keys", json={"project": "default/demo", "tier": "one"},
                      headers={"authorization": f"Bearer {admin}"}, timeout=30)
    made.raise_for_status()
    yield KeyedGateway(gw, key, made.json()["key"])
    gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium: the Debian ``chromium`` binary, not Playwright's own download."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


def keep_local(page: Page, base_url: str) -> list[str]:
    """Abort every request of ``page`` that leaves ``base_url`` (a CDN, anything off this
    machine); the list returned collects their URLs."""
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    return outside
