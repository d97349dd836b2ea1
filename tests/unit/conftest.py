from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.config import Settings
from gatehouse.state.memory import MemoryState

SECRET = "unit-test-server-secret-0123456789abcdef"


def make_settings(tmp: Path | None = None, **sections: Any) -> Settings:
    """Settings for in-process tests: no access log, open mode (keys optional) unless the
    test says otherwise, a throwaway SQLite file and a fixed server secret."""
    identity = {"require_key": False, "secret": SECRET, **sections.pop("identity", {})}
    storage = {"database_url": f"sqlite+aiosqlite:///{tmp / 'gh.db'}" if tmp else
               "sqlite+aiosqlite:///:memory:", **sections.pop("storage", {})}
    edge = {**sections.pop("edge", {})}
    # every test client is 127.0.0.1 / 10.0.0.1: the abuse detector only where a test wants it
    edge.setdefault("detector", {"enabled": False})
    return Settings.model_validate({"telemetry": {"access_log": False}, "identity": identity,
                                    "storage": storage, "edge": edge, **sections})


@pytest.fixture
async def gateway_client(tmp_path: Path) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    apps: list[Any] = []
    made = 0

    async def make(**sections: Any) -> httpx.AsyncClient:
        nonlocal made
        made += 1
        folder = tmp_path / f"app{made}"
        folder.mkdir()
        app = create_app(make_settings(folder, **sections))
        await app.startup()
        apps.append(app)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1234)),
                              base_url="http://gw")
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()
    for app in apps:
        await app.aclose()


@pytest.fixture
async def demo(gateway_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return await gateway_client()


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    """A gatehouse.toml for CLI tests: a throwaway SQLite store and secret file."""
    path = tmp_path / "gatehouse.toml"
    path.write_text('[storage]\ndatabase_url = "sqlite+aiosqlite:///gh.db"\n'
                    '[identity]\nsecret_file = "secret"\n')
    return path


@pytest.fixture
def live_state(cli_config: Path) -> Iterator[MemoryState]:
    """A running gateway's memory:// state, served on its socket beside the secret (in a
    thread with its own loop), as ``gatehouse serve`` does — so CLI changes reach it."""
    from gatehouse.config import load_settings
    from gatehouse.identity.service import resolve_paths
    from gatehouse.state.local import StateServer, socket_path

    state = MemoryState()
    server = StateServer(state, socket_path(resolve_paths(load_settings(cli_config))[1]))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield state
    asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
