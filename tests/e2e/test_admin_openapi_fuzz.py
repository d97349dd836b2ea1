"""schemathesis against the admin API's own OpenAPI document (/admin/v1/openapi.json), on a real
``gatehouse serve``: no 5xx, status codes, content types, headers and bodies as documented, and
every error in OpenAI's shape with a request id (tests/support/openapi_checks.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.e2e.test_identity import cli
from tests.support.openapi_checks import fuzz
from tests.support.procs import Gateway

# what would lock the fuzzer out of everything after: a firewall rule or a ban it makes (a
# deny rule on paths with "0", a ban of 0.0.0.0/0), or revoking or rotating the admin key
# itself (its id is in GET /keys' answers, which the fuzzer reuses) — these run last
LOCKOUTS = ("add_rule_admin_v1_edge_rules_post", "add_ban_admin_v1_edge_bans_post",
            "revoke_key_admin_v1_keys__key_id__revoke_post",
            "rotate_key_admin_v1_keys__key_id__rotate_post")


def test_admin_api_survives_schemathesis(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({})
    admin = cli(gw.config_path, "keys", "create", "--admin").strip()
    schema = gw.url + "/admin/v1/openapi.json"
    sent = fuzz(schema, gw.url, admin, 3,
                *(arg for op in LOCKOUTS for arg in ("--exclude-operation-id", op)))
    # the key worked to the end: the run was answered as an administrator, not with 401s
    assert httpx.get(gw.url + "/admin/v1/orgs", headers={"authorization": f"Bearer {admin}"},
                     timeout=30).status_code == 200
    # after a lockout, answers are 403 access_denied (documented, OpenAI's shape) — not the
    # 401 that a missing key gets elsewhere, so that one check is left out here
    sent += fuzz(schema, gw.url, admin, 3, "--exclude-checks", "missing_required_header",
                 *(arg for op in LOCKOUTS for arg in ("--include-operation-id", op)))
    assert sent >= 500  # 30 operations: every one reached, each with many cases
