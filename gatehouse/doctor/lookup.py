"""Where a request failed: ``GET /v1/requests/{id}`` with the caller's key (docs/telemetry.md)
for the doctor's own failed requests and the ids the user passes (``--request-id``). The record
says what each pipeline stage decided; the stage that refused it says whose problem it is.

Stages, in the order a request meets them (docs/errors.md)::

    edge → identity → quota → admission → upstream;  "request": the request itself was invalid,
    "client": the client left before the answer was complete
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from gatehouse.doctor.fetch import DEADLINE, Fetched, get_json
from gatehouse.doctor.health import SERVICE_CLASSES
from gatehouse.doctor.statuspage import text

MAX_LOOKUPS = 10
MAX_ID = 512
STAGE_OF_CLASS = {"blocked": "edge", "auth": "identity", "rate_limited": "quota",
                  "quota": "quota", "at_capacity": "admission", "server_error": "upstream",
                  "timeout": "upstream", "unavailable": "upstream", "client_error": "request",
                  "client_gone": "client"}
# a 503 "unavailable" names the stage whose shared state was down
STAGE_OF_CODE = {"quota_unavailable": "quota", "identity_unavailable": "identity"}
# what the client library calls an answer → the error class the gateway records for it
CLASS_OF_OUTCOME = {"unauthorized": "auth", "permission_denied": "auth",
                    "quota_exceeded": "quota", "rate_limited": "rate_limited",
                    "access_denied": "blocked", "challenge": "blocked",
                    "client_error": "client_error", "at_capacity": "at_capacity",
                    "server_error": "server_error", "upstream_unavailable": "unavailable",
                    "timeout": "timeout"}


def stage_of(error_class: str | None, code: str | None) -> str | None:
    if error_class is None or error_class == "ok":
        return None
    return STAGE_OF_CODE.get(code or "") or STAGE_OF_CLASS.get(error_class)


def valid_id(value: str) -> bool:
    """What ``GET /v1/requests/{id}`` accepts: 1–512 printable ASCII characters."""
    return 0 < len(value) <= MAX_ID and value.isascii() and value.isprintable()


@dataclass(slots=True)
class Lookup:
    request_id: str
    asked_by: str                 # "doctor" (its own probe) | "you" (--request-id)
    found: bool = False
    error: str | None = None      # why it was not found or could not be read
    http_status: int | None = None
    status: int | None = None     # the looked-up request's own answer
    error_class: str | None = None
    error_code: str | None = None
    model: str | None = None
    path: str | None = None
    time: str | None = None
    quota: str | None = None
    edge: str | None = None
    attempts: list[str] = field(default_factory=list)

    @property
    def stage(self) -> str | None:
        """The stage that refused or failed it; None when it succeeded (or is unknown)."""
        return stage_of(self.error_class, self.error_code)

    @property
    def failed(self) -> bool:
        return self.found and self.error_class not in (None, "ok")

    @property
    def service_side(self) -> bool:
        return self.error_class in SERVICE_CLASSES


def read_record(lookup: Lookup, record: Any) -> Lookup:
    if not isinstance(record, dict) or not isinstance(record.get("error_class"), str):
        lookup.error = "not a request record"
        return lookup
    status = record.get("status")
    lookup.found = True
    lookup.status = status if isinstance(status, int) and not isinstance(status, bool) else None
    lookup.error_class = text(record["error_class"], 40)
    lookup.error_code = text(record.get("error_code"), 80)
    lookup.model, lookup.path = text(record.get("model")), text(record.get("path"))
    lookup.time = text(record.get("time"), 40)
    lookup.quota, lookup.edge = text(record.get("quota"), 40), text(record.get("edge"), 40)
    attempts = record.get("attempts")
    if isinstance(attempts, list):
        lookup.attempts = [a for a in (text(x, 80) for x in attempts[:20]) if a]
    return lookup


def from_fetched(request_id: str, asked_by: str, fetched: Fetched) -> Lookup:
    lookup = Lookup(request_id, asked_by, http_status=fetched.status)
    if fetched.status == 404:
        lookup.error = "not found in your organization's request log"
        return lookup
    if not fetched.ok:
        lookup.error = fetched.error
        return lookup
    return read_record(lookup, fetched.data)


async def look_up(client: httpx.AsyncClient, api_base: str, key: str,
                  ids: list[tuple[str, str]], deadline: float = DEADLINE) -> list[Lookup]:
    """Each (request id, asked by) of the first ``MAX_LOOKUPS``, concurrently."""
    first: dict[str, str] = {}
    for request_id, asked_by in ids:
        if valid_id(request_id):
            first.setdefault(request_id, asked_by)
    wanted = list(first.items())[:MAX_LOOKUPS]

    async def one(request_id: str, asked_by: str) -> Lookup:
        url = f"{api_base}/requests/{quote(request_id, safe='')}"
        fetched = await get_json(client, url, {"authorization": f"Bearer {key}"}, deadline)
        return from_fetched(request_id, asked_by, fetched)

    return list(await asyncio.gather(*(one(i, who) for i, who in wanted)))
