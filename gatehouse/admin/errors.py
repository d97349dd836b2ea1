"""The admin API's one translation boundary: whatever goes wrong — a store refusal
(:class:`AccountError`), a body FastAPI could not validate, an unknown path, an outage — leaves
as a :class:`GatehouseError` in OpenAI's error shape with the request id."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from gatehouse.errors import (
    Conflict,
    GatehouseError,
    IdentityUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    RouteNotFound,
    unstorable,
)
from gatehouse.state.base import StateError
from gatehouse.store.accounts import AccountError
from gatehouse.store.db import refused_value

log = logging.getLogger("gatehouse.admin")
OUTAGES = (OperationalError, InterfaceError, StateError, ConnectionError, TimeoutError)
_TYPE_ERRORS = ("_type", "_parsing")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def request_id(scope: Mapping[str, Any]) -> str | None:
    """The id the gateway gave this request (see ``Gateway._mounted``)."""
    rid = (scope.get("state") or {}).get("request_id")
    return rid if isinstance(rid, str) else None


def render(error: GatehouseError, scope: Mapping[str, Any]) -> Response:
    return Response(error.body(request_id(scope)), status_code=error.status,
                    headers=error.response_headers(), media_type="application/json")


def from_account_error(exc: AccountError) -> GatehouseError:
    if exc.kind == "not_found":
        return NotFound(exc.message)
    if exc.kind == "conflict":
        return Conflict(exc.message)
    return InvalidRequest(exc.message)


@contextmanager
def about(param: str) -> Iterator[None]:
    """Name the field a store refusal (``AccountError("invalid")``) is about."""
    try:
        yield
    except AccountError as exc:
        if exc.kind != "invalid":
            raise
        raise InvalidRequest(exc.message, param=param) from None


def _location(errors: Sequence[Any]) -> list[Any]:
    """Where the first problem is. A value that fits no member of a union (``str |
    list[str]``) fails once per member, at ``field.str``, ``field.list[str]``, …: the field
    is what those locations have in common."""
    if not errors:
        return []
    loc = list(errors[0].get("loc", ()))
    for other in errors[1:]:
        there = list(other.get("loc", ()))
        if there[:2] != loc[:2]:
            continue  # another field's problem
        same = 0
        while same < min(len(loc), len(there)) and loc[same] == there[same]:
            same += 1
        loc = loc[:same]
    return loc


def from_validation(errors: Sequence[Any]) -> InvalidRequest:
    """The first problem, named the way OpenAI names them (``param`` is the field)."""
    first = errors[0] if errors else {}
    location = _location(errors)
    # a union's members each fail (asn: int | list[int]): the member whose type the value
    # has says what is wrong with it ([64500, 2**32]: too large, not "not an integer")
    first = next((e for e in errors if list(e.get("loc", ()))[:len(location)] == location
                  and not str(e.get("type", "")).endswith(_TYPE_ERRORS)), first)
    kind = str(first.get("type", ""))
    where, *path = location or ["body"]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") \
        or None
    if kind == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request: "
                              f"{(first.get('ctx') or {}).get('error', 'invalid JSON')}.",
                              code="invalid_json")
    if field is None and where == "body":
        return InvalidRequest("The request body must be a JSON object, sent with "
                              "Content-Type: application/json.", code="invalid_json")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{field}'.", param=field,
                              code="missing_required_parameter")
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: '{field}'.",
                              param=field)
    message = f"Invalid '{field}': {first.get('msg', 'invalid value')}."
    if kind.endswith(_TYPE_ERRORS):
        return InvalidRequest(message, param=field, code="invalid_type")
    return InvalidRequest(message, param=field)


def _allowed(request: Request) -> list[str]:
    """The methods some route takes on this path (routers nest, so ask each to match)."""
    return [method for method in METHODS if any(
        route.matches({**request.scope, "method": method})[0] is Match.FULL
        for route in request.app.routes)]


def from_http(request: Request, exc: HTTPException) -> GatehouseError:
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        return RouteNotFound(f"Unknown request URL: {method} {path}. The admin endpoints are "
                             "listed at /admin/v1/docs.")
    if exc.status_code == 405:
        allow = ", ".join(_allowed(request))
        return MethodNotAllowed(f"{method} is not allowed on {path}; use {allow}.",
                                headers={"allow": allow})
    if exc.status_code == 413:  # bodylimit.BodyLimit's, raised while a route reads the body
        return RequestTooLarge(str(exc.detail))
    if 400 <= exc.status_code < 500:
        return InvalidRequest(str(exc.detail))
    return InternalError("The admin API failed unexpectedly.", cause=str(exc.detail))


def install(app: FastAPI) -> None:
    """Register one handler per family of failure on ``app``."""

    async def gatehouse_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatehouseError)
        return render(exc, request.scope)

    async def account_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AccountError)
        return render(from_account_error(exc), request.scope)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render(from_validation(exc.errors()), request.scope)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return render(from_http(request, exc), request.scope)

    async def outage(request: Request, exc: Exception) -> Response:
        log.warning("admin API: store or state unavailable: %s", type(exc).__name__)
        return render(IdentityUnavailable("The account store cannot be reached right now.",
                                          retry_after=5), request.scope)

    async def driver_error(request: Request, exc: Exception) -> Response:
        if refused_value(exc):  # a value the store cannot hold (a NUL in a name): the caller's
            return render(unstorable(exc), request.scope)
        raise exc  # on to ``bug`` (the server error handler), which logs it

    async def bug(request: Request, exc: Exception) -> Response:
        # Starlette logs and re-raises after this answer: a 500 made here is a bug to fix
        return render(InternalError("The admin API failed unexpectedly; this is a bug.",
                                    cause=repr(exc)), request.scope)

    app.add_exception_handler(GatehouseError, gatehouse_error)
    app.add_exception_handler(AccountError, account_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    for kind in OUTAGES:  # DBAPIError, their base, has its own: the nearest class is used
        app.add_exception_handler(kind, outage)
    app.add_exception_handler(DBAPIError, driver_error)
    app.add_exception_handler(Exception, bug)
