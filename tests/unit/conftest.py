from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.config import Settings


def make_settings(**sections: Any) -> Settings:
    return Settings.model_validate({"telemetry": {"access_log": False}, **sections})


@pytest.fixture
async def gateway_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    apps: list[Any] = []

    def make(**sections: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(**sections))
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
    return gateway_client()
