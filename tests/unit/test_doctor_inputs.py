"""The doctor's readers: HAR files written for the test, Statuspage v2 summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.doctor.har import HarError, read_har
from gatehouse.doctor.statuspage import matches, read_summary
from tests.support.doctor import incident, summary

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"


def test_har_failures_ids_rays_and_timings() -> None:
    har = read_har(FIXTURES / "mixed.har")
    assert har.total == 5
    assert [(r.method, r.status) for r in har.failing] == [
        ("POST", 429), ("GET", 403), ("GET", 0)]
    assert har.failing_pct == 60.0
    assert har.statuses == {"0": 1, "200": 2, "403": 1, "429": 1}
    assert har.request_ids == ["req_rate_1", "req_denied_1"]  # the failures' ids
    assert har.ray_ids == ["ray_7f3a9c"]
    assert har.blocked == 1 and har.challenges == 0
    assert har.failing[2].error == "net::ERR_CONNECTION_TIMED_OUT"
    assert har.slowest is not None and har.slowest.url.endswith("app.js")
    assert har.median_ms == 95.0


def test_har_challenge_loop_cloudflare_and_gatehouse() -> None:
    har = read_har(FIXTURES / "challenge_loop.har")
    assert har.challenges == 2 and har.blocked == 0
    assert har.ray_ids == ["9f00aa11bb22cc33", "ray_loop2"]  # cf-ray without its colo
    assert round(har.failing_pct) == 67


def test_not_a_har(tmp_path: Path) -> None:
    (tmp_path / "x.har").write_text('{"entries": []}')
    with pytest.raises(HarError):
        read_har(tmp_path / "x.har")
    with pytest.raises(HarError):
        read_har(tmp_path / "missing.har")


def test_component_names() -> None:
    assert matches("API", ("API",)) and matches("APIs", ("api",))
    assert not matches("Rapid Deploy", ("API",))
    assert matches("demo", ("API", "demo"))


def test_an_incident_on_the_api_is_ours() -> None:
    s = read_summary("u", summary(incident("Elevated errors", ["c-api"]),
                                  incident("Sora is slow", ["c-sora"])), ("API",))
    assert [i.name for i in s.ours] == ["Elevated errors"]
    assert [i.name for i in s.others] == ["Sora is slow"]
    assert s.trouble
    assert s.ours[0].shortlink and s.ours[0].latest_update == "We are investigating elevated errors."


def test_another_products_incident_is_not() -> None:
    s = read_summary("u", summary(incident("Sora is slow", ["c-sora"])), ("API",))
    assert not s.trouble and len(s.others) == 1


def test_a_group_brings_its_members_and_resolved_incidents_are_gone() -> None:
    s = read_summary("u", summary(incident("Chat errors", ["c-chat"]),
                                  incident("Old", ["c-api"], status="resolved")), ("APIs",))
    assert "Chat Completions" in s.watched
    assert [i.name for i in s.ours] == ["Chat errors"]


def test_a_degraded_component_without_an_incident_counts() -> None:
    s = read_summary("u", summary(degraded={"c-api": "partial_outage"}), ("API",))
    assert s.trouble and s.degraded == {"API": "partial_outage"}


def test_an_incident_naming_no_component_may_be_ours() -> None:
    s = read_summary("u", summary(incident("Something", [])), ("API",))
    assert s.ours and s.ours[0].affects_us is None


async def test_the_key_never_reaches_a_report_whole() -> None:
    """A key pasted with a trailing CR: httpx refuses the header and its error quotes it, so
    the whole key went into the message (terminal, Markdown and JSON reports); a server that
    echoes the key in its error did the same; a key of 12 characters or fewer was shown whole."""
    import asyncio

    import httpx

    from gatehouse.doctor.api import call, show_key

    key = "gh-demo-" + "k" * 40

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient() as client:
        made, _ = await call(client, "GET", f"http://127.0.0.1:{port}/v1/models",
                             "/v1/models", key + "\r")
    assert made.message is not None and key not in made.message
    assert show_key(key) in made.message  # the header httpx refused, masked

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {
            "message": f"bad key {request.headers['authorization']}", "type": "x"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(echo)) as client:
        made, _ = await call(client, "GET", "http://gw/v1/models", "/v1/models", key)
    assert made.message and key not in made.message
    assert show_key("sk-SHORTKEY1") == "sk…"


@pytest.mark.parametrize(("content", "why"), [
    (b'{"log": {"entries": [[1, 2]]}}', "entry 1: not an object"),
    (b'{"log": {"entries": [{"response": {"status": 1e400}}]}}', "not JSON"),
    (b'{"log": {"entries": [{"response": {"status": 200.5}}]}}', "200.5 is not an HTTP status"),
    (b'{"log": {"entries": [{"response": {"status": "abc"}}]}}', "abc is not an HTTP status"),
    (b'{"log": {"entries": [{"response": {"status": 200}, "time": "nan"}]}}',
     "nan is not a number of milliseconds"),
    (b'{"log": {"entries": [{}, {"response": []}]}}', "entry 2.response: not an object"),
    (b'{"log": {"entries": [{"response": {"headers": {"a": 1}}}]}}', "headers are not a list"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b"<html>not a HAR</html>", "not JSON"),
    (b'{"log": {"entries": [{"request": {"url": "\xe9"}}]}}', "not JSON"),
    (b'{"log": {}}', "no log.entries list"),
    (b'{"log": {"entries": {"0": {}}}}', "no log.entries list"),
    (b"[]", "no log.entries list"),
])
def test_a_malformed_har_is_a_clear_error(tmp_path: Path, content: bytes, why: str) -> None:
    """Each of these raised AttributeError, OverflowError, RecursionError or TypeError (a
    traceback) instead of saying the file cannot be read."""
    path = tmp_path / "bad.har"
    path.write_bytes(content)
    with pytest.raises(HarError, match="this HAR file cannot be read") as caught:
        read_har(path)
    assert why in str(caught.value)


def test_a_bom_and_numbers_written_as_strings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.har"
    path.write_bytes(b'\xef\xbb\xbf{"log": {"entries": [{"response": {"status": "503"}, '
                     b'"time": "12.5"}, {"response": {"status": 200.0}}]}}')
    har = read_har(path)
    assert har.statuses == {"200": 1, "503": 1} and har.slowest and har.slowest.ms == 12.5


def test_control_sequences_from_a_har_reach_no_report(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from gatehouse.doctor import Answers, Findings, decide
    from gatehouse.doctor.markdown import render
    from gatehouse.doctor.network import Environment
    from gatehouse.doctor.profiles import gatehouse_profile
    from gatehouse.doctor.report import build

    esc = {"log": {"entries": [{
        "startedDateTime": "\x1b[31mred", "time": 5,
        "request": {"method": "GET\x1b]0;pwned\x07", "url": "http://x/\x1b[2J\x9b"},
        "response": {"status": 500, "_error": "\x1b[5mblink",
                     "headers": [{"name": "x-request-id", "value": "req\x1b[1m"}]}}]}}
    path = tmp_path / "esc\x1b[1m.har"
    path.write_text(__import__("json").dumps(esc))
    har = read_har(path)
    f = Findings(gatehouse_profile("http://127.0.0.1:9"), "http://127.0.0.1:9",
                 Environment({}, []), Answers(), har=har)
    report = build(f, decide(f), datetime.now(UTC))
    markdown = render(report)
    for text in (markdown, __import__("json").dumps(report, ensure_ascii=False)):
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "req" in markdown and "http://x/" in markdown
