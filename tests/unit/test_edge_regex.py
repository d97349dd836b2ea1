"""Edge-rule regexes are matched by RE2: a backtracking pattern costs one request nothing and
the other users nothing; what RE2 cannot do is refused where rules are written (parse, CLI,
admin API, gatehouse.toml) and skipped, with a warning, in a store written by an older
version; and patterns mean what they meant under Python's ``re``."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatehouse.config import ConfigError, EdgeSettings, load_settings
from gatehouse.edge.client import network_of
from gatehouse.edge.matcher import RuleSet
from gatehouse.edge.regex import Regex, RegexError, any_of
from gatehouse.edge.rulebook import RuleBook
from gatehouse.edge.rules import RuleError, parse_rule
from gatehouse.edge.visitor import Visitor
from tests.unit.test_cli_accounts import config, run  # noqa: F401  (the fixture)
from tests.unit.test_edge_firewall import denied, site  # noqa: F401  (the fixture)

EVIL = "(a+)+$"
SLOW_FOR_PYTHON = "a" * 27 + "!"  # Python's re: ~5 s a search, doubling per character
UNSUPPORTED = [  # (pattern, what RE2 says it lacks)
    (r"(a)\1", r"\1"),
    (r"(?P<x>a)(?P=x)", "(?P"),
    (r"bot(?=/)", "(?="),
    (r"(?<!good)bot", "(?<!"),
    (r"(?>a+)b", "(?>"),
    (r"a++b", "++"),
    (r"(?x) bot  # verbose", "(?x"),
]


def visitor(ua: str, path: str = "/v1/models") -> Visitor:
    addr = ipaddress.ip_address("192.0.2.1")
    return Visitor(addr, network_of(addr, 24, 64), "GET", path, {"user-agent": ua}, True, False)


def test_a_backtracking_pattern_is_searched_in_linear_time() -> None:
    rules = [parse_rule({"action": "deny", "user_agent": EVIL}, "evil"),
             parse_rule({"action": "deny", "path": "^/(x+x+)+y"}, "evil-path")]
    rs = RuleSet(rules, {})
    started = time.monotonic()
    assert rs.match(visitor(SLOW_FOR_PYTHON)) is None
    assert rs.match(visitor("x", "/" + "x" * 26)) is None
    assert rs.match(visitor("a" * 26)) is rules[0]
    # generous: RE2 answers in microseconds; Python's re took ~5 s for each of the first two
    assert time.monotonic() - started < 2


async def test_one_request_with_a_crafted_user_agent_does_not_stall_the_others(
        site: Any) -> None:  # noqa: F811
    s = await site(edge={"rules": [{"action": "deny", "user_agent": EVIL, "name": "evil"}]})
    attacker, other = s.at("198.51.100.7"), s.at("198.51.100.8")
    started = time.monotonic()
    crafted, plain = await asyncio.gather(
        attacker.get("/v1/models", headers={"user-agent": SLOW_FOR_PYTHON}),
        other.get("/v1/models"))
    assert crafted.status_code == 200 and plain.status_code == 200
    assert time.monotonic() - started < 10  # the event loop was never held for seconds
    denied(await attacker.get("/v1/models", headers={"user-agent": "aaaa"}))  # still a rule


@pytest.mark.parametrize("pattern, lacking", UNSUPPORTED)
def test_what_re2_cannot_do_is_refused_with_the_dialect_named(pattern: str,
                                                              lacking: str) -> None:
    for field in ("user_agent", "path"):
        with pytest.raises(RuleError) as caught:
            parse_rule({"action": "deny", field: pattern}, "x")
        message = str(caught.value)
        assert message.startswith(f"{field}: RE2 syntax is used"), message
        assert "no backreferences, lookahead or lookbehind" in message and lacking in message
        assert caught.value.param == field
    # a pattern neither engine reads keeps its old answer
    with pytest.raises(RuleError, match="path: not a valid regular expression"):
        parse_rule({"action": "deny", "path": "(("}, "x")


def test_the_cli_refuses_them(config: Path) -> None:  # noqa: F811
    said = run(config, "rules", "add", "deny", "--user-agent", r"(bad)\1", code=1)
    assert "user_agent: RE2 syntax is used" in said and "backreferences" in said
    said = run(config, "rules", "add", "deny", "--path", "(?<=/)admin", code=1)
    assert "path: RE2 syntax is used" in said and "lookbehind" in said
    assert "rule_" not in run(config, "rules", "list")  # nothing was stored


async def test_the_admin_api_refuses_them(site: Any) -> None:  # noqa: F811
    s = await site()
    admin = s.at("127.0.0.1")
    for field, pattern in (("user_agent", r"(bad)\1"), ("path", "^/admin(?!/public)")):
        r = await admin.post("/admin/v1/edge/rules", headers=s.admin,
                             json={"action": "deny", field: pattern})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field and "RE2 syntax is used" in error["message"], error
    assert (await admin.get("/admin/v1/edge/rules", headers=s.admin)).json()["data"] == []


def test_gatehouse_toml_refuses_them_naming_the_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.toml"
    path.write_text('[[edge.rules]]\naction = "allow"\ncidr = "10.0.0.0/8"\n\n'
                    '[[edge.rules]]\naction = "deny"\nuser_agent = \'(?<=x)bot\'\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "edge.rules.1"
    assert caught.value.reason.startswith("user_agent: RE2 syntax is used"), caught.value.reason


@dataclass
class Row:
    id: str
    spec: str


class OldStore:
    """The rows a store written by an older version may hold (it accepted any Python regex)."""

    async def rules(self) -> list[Row]:
        return [Row("rule_old", '{"action": "deny", "user_agent": "(bot)\\\\1"}'),
                Row("rule_ok", '{"action": "deny", "user_agent": "badbot"}')]


async def test_a_stored_rule_re2_cannot_read_is_skipped_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    book = RuleBook(EdgeSettings(), tmp_path, OldStore())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="gatehouse.edge"):
        await book.start(None)
    try:
        assert [r.label for r in book.current.rules] == ["rule_ok"]
        assert book.current.match(visitor("a badbot")) is not None
        assert any("stored rule rule_old is not usable and is skipped: user_agent: RE2 syntax"
                   in m for m in caplog.messages), caplog.messages
    finally:
        await book.aclose()


# patterns that compiled before mean what they meant: RE2's answer is Python's re.search
SAME = [
    "(?i)badbot", "^/wp-admin", "bot$", "^/admin$", r"^/admin\Z", r"end\Z", "(?m)^b$",
    "(?s)a.b", "a.b", "(?i:x)Y", r"x{,2}y", r"x{2,}", r"[\b]", r"\u00e9t\u00e9", r"caf\é",
    "[[:a]", "[]a]+", "[^]a]", r"\d+\.\d+", r"\w+bot", r"\bcurl\b", r"\s", "^$",
    r"(?P<v>\d+)", "a|b|", "^(GET|HEAD) ", r"\x41", "\\.", r"[\\\]]", r"\\Z",
]
TEXTS = [
    "", "\n", "BadBot/1.0", "/wp-admin/x", "goodbot", "goodbot\n", "goodbots", "/admin",
    "/admin\n", "/admin/\n", "the end", "the end\n", "a\nb\n", "a\nb", "axb", "xY", "XY",
    "xxxy", "y", "xxy", "\b", "été", "café", "[", ":", "a]", "]", "Mozilla 5.0", "curl/8",
    "a curl", "tab\there", "12", "HEAD /", "A", "x\\Z", "\\", "x.y",
]


@pytest.mark.parametrize("pattern", SAME)
def test_patterns_mean_what_python_meant(pattern: str) -> None:
    regex = Regex.parse(pattern)
    for text in TEXTS:
        assert regex.search(text) == (re.search(pattern, text) is not None), (pattern, text)


def test_the_union_is_any_member() -> None:
    members = [Regex.parse(p) for p in SAME]
    union = any_of(members)
    assert union is not None
    for text in TEXTS:
        assert union.search(text) == any(m.search(text) for m in members), text


def test_the_kept_difference_ascii_classes() -> None:
    """Documented: \\d \\w \\s \\b are ASCII (RE2's Unicode classes cost 100+ KB each)."""
    assert Regex.parse(r"\w").search("é") is False and re.search(r"\w", "é")
    assert Regex.parse(r"\w").search("e") is True
    with pytest.raises(RegexError, match="RE2 syntax is used"):
        Regex.parse("(?a)x")
