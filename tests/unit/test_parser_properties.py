"""Hypothesis on the parsers that read what clients and operators write: each raises only its
documented error, whatever it is given, and keeps its invariants (docs/reliability.md,
"Robustness"). Derandomized, so CI runs are reproducible; examples bounded so the file runs in
seconds."""

from __future__ import annotations

import ipaddress
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.cli.accounts import parse_duration
from gatehouse.client.outcome import retry_after
from gatehouse.config import ConfigError, Settings, load_settings
from gatehouse.context import header_dict
from gatehouse.edge.clearance import cookie_values
from gatehouse.edge.client import UNKNOWN, ClientResolver, parse_ip
from gatehouse.errors import InvalidClientRequestId, InvalidRequest
from gatehouse.identity.stage import session_cookie
from gatehouse.schema.stage import parse_json
from gatehouse.store.accounts import KEY_LIFETIME_MAX
from gatehouse.telemetry.health import FILTERS, WINDOWS, parse_query_string
from gatehouse.telemetry.ids import (
    check_client_request_id,
    new_request_id,
    request_id_as_uuid,
    request_id_time,
)
from gatehouse.telemetry.usage_api import LIMITS, WIDTHS, encode_page, parse_usage
from tests.support.procs import write_toml

FAST = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=60)
T = TypeVar("T")  # the config loader validates the whole tree

def parsed_or_400(parse: Callable[[bytes], T], raw: bytes) -> T | None:
    """What ``parse`` made of ``raw``, or None when it refused it with a 400 — its one
    documented error."""
    try:
        return parse(raw)
    except InvalidRequest as exc:
        assert exc.status == 400
        return None


# -- addresses: the client is the peer, or an entry trusted proxies wrote ----------------------
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
hop = st.one_of(
    v4, v6, v4.map(lambda a: a + ":443"), v6.map(lambda a: f"[{a}]:8080"),
    v6.map(lambda a: f'"[{a}]"'),
    st.sampled_from(["", "unknown", "_hidden", "1.2.3", "::ffff:10.0.0.1"]),
    st.text(max_size=40))
TRUSTED = ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"]
trusted_v4 = st.ip_addresses(network="10.0.0.0/8").map(str)


@FAST
@given(peer=st.one_of(st.none(), hop, trusted_v4), hops=st.lists(st.one_of(hop, trusted_v4),
       max_size=8), forwarded=st.booleans())
def test_the_client_is_the_peer_or_a_forwarded_entry(peer: str | None, hops: list[str],
                                                     forwarded: bool) -> None:
    header = "forwarded" if forwarded else "x-forwarded-for"
    value = ", ".join(f"for={h}" if forwarded else h for h in hops)
    resolver = ClientResolver(TRUSTED, header)
    ip = resolver.resolve(peer, {header: value})
    candidates = {parse_ip(peer) or UNKNOWN} | {parse_ip(h.strip()) for h in hops}
    assert ip in candidates
    if (parse_ip(peer) or UNKNOWN) not in resolver.trusted:
        assert ip == (parse_ip(peer) or UNKNOWN)  # an untrusted peer's headers count for nothing


@FAST
@given(text=st.one_of(hop, st.text(max_size=60)))
def test_parse_ip_gives_an_address_or_none(text: str) -> None:
    ip = parse_ip(text)
    assert ip is None or isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    if isinstance(ip, ipaddress.IPv6Address):
        assert ip.ipv4_mapped is None  # mapped addresses are folded to IPv4


# -- headers -----------------------------------------------------------------------------------
header_bytes = st.binary(max_size=60)


@FAST
@given(pairs=st.lists(st.tuples(st.sampled_from([b"a", b"A", b"x-forwarded-for", b"Cookie"])
                                | header_bytes, header_bytes), max_size=20))
def test_header_dict_joins_repeats_and_lowercases(pairs: list[tuple[bytes, bytes]]) -> None:
    headers = header_dict(pairs)
    assert all(name == name.lower() for name in headers)
    for name, value in headers.items():
        sent = [v.decode("latin-1") for n, v in pairs if n.decode("latin-1").lower() == name]
        assert value == ", ".join(sent)


@FAST
@given(header=st.text(max_size=120), name=st.sampled_from(["gh_session", "gh_clearance", "a"]))
def test_cookie_readers_never_raise(header: str, name: str) -> None:
    value = session_cookie(header, name)
    assert value is None or isinstance(value, str)
    assert all(v and v == v.strip() for v in cookie_values(header, name))


@FAST
@given(ms=st.one_of(st.none(), st.text(max_size=30), st.floats().map(str)),
       seconds=st.one_of(st.none(), st.text(max_size=40), st.floats().map(str),
                         st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))))
def test_retry_after_is_none_or_a_finite_wait(ms: str | None, seconds: str | None) -> None:
    headers = {k: v for k, v in (("retry-after-ms", ms), ("Retry-After", seconds)) if v is not None}
    wait = retry_after(headers)
    assert wait is None or (math.isfinite(wait) and wait >= 0)


@FAST
@given(raw=st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=80).map(lambda v: repr(v).replace("'", '"').encode())))
def test_parse_json_answers_an_object_or_a_400(raw: bytes) -> None:
    body = parsed_or_400(lambda b: parse_json(b, "application/json", max_depth=8), raw)
    assert body is None or isinstance(body, dict)


# -- request ids -------------------------------------------------------------------------------
@FAST
@given(value=st.text(max_size=600))
def test_client_request_id_is_printable_ascii_or_refused(value: str) -> None:
    ok = 0 < len(value) <= 512 and value.isascii() and value.isprintable()
    try:
        assert check_client_request_id(value) == value and ok
    except InvalidClientRequestId as exc:
        assert not ok and exc.status == 400 and exc.param == "X-Client-Request-Id"


def test_request_ids_round_trip_their_time_and_uuid() -> None:
    before = time.time()
    for _ in range(2000):
        rid = new_request_id()
        assert len(rid) == 30 and rid.startswith("req_")
        assert before - 0.002 <= request_id_time(rid) <= time.time() + 0.002
        assert uuid.UUID(request_id_as_uuid(rid)).version == 4


# -- durations ---------------------------------------------------------------------------------
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@FAST
@given(text=st.one_of(st.text(max_size=30), st.from_regex(r"\A(\d{1,30}[smhdwSMHDW]){1,4}\Z")))
def test_a_duration_is_bounded_or_refused(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except typer.BadParameter:
        return
    assert math.isfinite(seconds) and 0 < seconds <= KEY_LIFETIME_MAX


@FAST
@given(parts=st.lists(st.tuples(st.integers(0, 5000), st.sampled_from(sorted(UNITS))),
                      min_size=1, max_size=5))
def test_a_duration_round_trips(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * UNITS[unit] for n, unit in parts)
    if 0 < total <= KEY_LIFETIME_MAX:
        assert parse_duration(text) == total
        assert parse_duration(f" {text.upper()} ") == total
    else:
        with pytest.raises(typer.BadParameter):
            parse_duration(text)


# -- query strings -----------------------------------------------------------------------------
def query(names: list[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    pairs = st.lists(st.tuples(st.sampled_from(names) | st.text(max_size=8), values),
                     max_size=8)
    return st.one_of(st.binary(max_size=120), pairs.map(lambda p: urlencode(p).encode()))


@FAST
@given(raw=query([*FILTERS, "window", "key", "endpoint"],
                 st.sampled_from(sorted(WINDOWS)) | st.text(max_size=20)))
def test_health_queries_parse_or_are_a_400(raw: bytes) -> None:
    q = parsed_or_400(parse_query_string, raw)
    assert q is None or (q.window in WINDOWS and set(q.filters) <= set(FILTERS))


USAGE_NAMES = ["start_time", "end_time", "bucket_width", "limit", "page", "batch", "group_by",
               "project_ids", "user_ids", "api_key_ids", "models"]
usage_values = st.one_of(st.integers(0, 2**40).map(str), st.from_regex(r"\A0{0,8}\d{1,4}\Z"),
                         st.sampled_from(["1m", "1h", "1d", "true", "false", "model",
                                          "api_key_id", "project_id"]), st.text(max_size=12))


usage_queries = st.one_of(query(USAGE_NAMES, usage_values), st.tuples(
    st.integers(1_700_000_000, 1_800_000_000), st.sampled_from(sorted(WIDTHS)),
    st.integers(0, 8), st.integers(0, 3000)).map(
        lambda t: f"start_time={t[0]}&bucket_width={t[1]}&limit={'0' * t[2]}{t[3]}".encode()))


@FAST
@given(raw=usage_queries)
def test_usage_queries_parse_within_bounds_or_are_a_400(raw: bytes) -> None:
    # found here: leading zeros hid a limit's size ("limit=0000099" gave 99 buckets, max 31)
    q = parsed_or_400(parse_usage, raw)
    if q is not None:
        assert q.width in WIDTHS and 1 <= q.limit <= LIMITS[q.width][1]
        assert q.end is None or q.end > q.start


@FAST
@given(start=st.integers(0, 10**10 - 1), width=st.sampled_from(sorted(WIDTHS)),
       steps=st.integers(0, 10_000))
def test_a_usage_page_cursor_round_trips(start: int, width: str, steps: int) -> None:
    size = WIDTHS[width][1]
    at = start - start % size + steps * size
    q = parse_usage(f"start_time={start}&bucket_width={width}".encode())
    assert parse_usage(f"start_time={start}&bucket_width={width}&page="
                       f"{encode_page(at, q)}".encode()).page == at


# -- the config loader: any TOML, any GATEHOUSE_* variable → settings, or a ConfigError --------
def field_names(model: type[Any], prefix: str = "", depth: int = 0) -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield prefix + name
        inner = info.annotation
        if depth < 2 and isinstance(inner, type) and hasattr(inner, "model_fields"):
            yield from field_names(inner, f"{prefix}{name}.", depth + 1)


PATHS = sorted(set(field_names(Settings)))
scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.sampled_from(["demo", "redis://x", "memory://",
                                                           "10.0.0.0/8", "sqlite:///x.db", "1h"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["backends", "upstream", "model", "models", "weight", "base_url", "a"]),
    inner, max_size=3), max_leaves=12)


def nest(assignments: list[tuple[str, Any]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in assignments:
        node = tree
        *parents, last = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[last] = value
    return tree


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@SLOW
@given(assignments=st.lists(st.tuples(st.sampled_from(PATHS) | st.text(
           "abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12), values), max_size=6),
       env=st.dictionaries(st.sampled_from(PATHS).map(
           lambda p: "GATEHOUSE_" + p.upper().replace(".", "__")) | st.text(
           "ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=20).map(lambda n: "GATEHOUSE_" + n),
           st.text(max_size=16) | scalars.map(str), max_size=4))
def test_config_is_settings_or_a_config_error(config_dir: Path, assignments: list[tuple[str, Any]],
                                              env: dict[str, str]) -> None:
    path = config_dir / "gatehouse.toml"
    try:
        write_toml(path, nest([(p, v) for p, v in assignments if p.strip(".") and ".." not in p]))
    except TypeError:  # a value TOML cannot hold (write_toml's own limit): not the loader's
        return
    try:
        loaded = load_settings(path, environ=env)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(loaded, Settings)


@SLOW
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_file_is_settings_or_a_config_error(config_dir: Path, raw: bytes) -> None:
    # found here: a file that is not UTF-8 raised UnicodeDecodeError out of load_settings
    path = config_dir / "raw.toml"
    path.write_bytes(raw)
    try:
        load_settings(path, environ={})
    except ConfigError:
        pass
