"""schemathesis against docs/openapi-v1.yaml — the document of the public endpoints — on a real
``gatehouse serve`` with the built-in demo model and a project key: no 5xx, status codes,
content types, headers and bodies as documented, every error in OpenAI's shape with a request
id (tests/support/openapi_checks.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from tests.e2e.test_identity import cli
from tests.support.openapi_checks import fuzz
from tests.support.procs import Gateway

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi-v1.yaml"


def test_public_api_survives_schemathesis(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"identity": {"require_key": True}})
    admin = {"authorization": f"Bearer {cli(gw.config_path, 'keys', 'create', '--admin').strip()}"}
    for path, body in (("orgs", {"name": "acme"}), ("projects", {"project": "acme/web"})):
        httpx.post(f"{gw.url}/admin/v1/{path}", json=body, headers=admin,
                   timeout=30).raise_for_status()
    made = httpx.post(gw.url + "/admin/v1/keys", json={"project": "acme/web"}, headers=admin,
                      timeout=30)
    made.raise_for_status()
    key = made.json()["key"]
    sent = fuzz(str(DOCUMENT), gw.url, key, 20)
    assert sent >= 500  # 11 operations, each with many cases
    # the key worked to the end (the run was answered, not refused with 401s), and the
    # gateway still serves the official client
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content
