"""Rules: parsing refusals, first match wins, challenge never for API clients, regexes, list
files reloaded on change and on SIGHUP, geo from a generated .mmdb, and 10,000 rules matching
exactly as a plain in-order scan does."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import random
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from gatehouse import turns as turns_module
from gatehouse.config import ConfigError, EdgeSettings
from gatehouse.edge import rulebook as rulebook_module
from gatehouse.edge import rules as rules_module
from gatehouse.edge.client import network_of
from gatehouse.edge.geo import Geo
from gatehouse.edge.matcher import RuleSet
from gatehouse.edge.regex import Regex, any_of
from gatehouse.edge.rulebook import RuleBook, read_list_in_turns, stored_rule
from gatehouse.edge.rules import (
    ListParser,
    Prefix,
    Range,
    Rule,
    RuleError,
    check_list,
    list_range,
    parse_network,
    parse_rule,
    read_list,
)
from gatehouse.edge.screen import is_api_path
from gatehouse.edge.visitor import Visitor
from gatehouse.store.edge import EdgeRecords
from tests.support.loops import counted_turns
from tests.support.services import migrated_store


def visitor(ip: str, path: str = "/login", ua: str = "Mozilla/5.0", bearer: bool = False
            ) -> Visitor:
    addr = ipaddress.ip_address(ip)
    headers = {"user-agent": ua, **({"authorization": "Bearer k"} if bearer else {})}
    return Visitor(addr, network_of(addr, 24, 64), "GET", path, headers,
                   is_api_path(path), True)


def rules(*specs: dict[str, Any]) -> list[Rule]:
    return [parse_rule(s, f"r{i}") for i, s in enumerate(specs)]


@pytest.mark.parametrize("spec, problem", [
    ({"action": "block", "cidr": "1.2.3.4"}, "action"),
    ({"action": "deny"}, "at least one condition"),
    ({"action": "deny", "cidr": "1.2.3.4/33"}, "not an address or CIDR"),
    ({"action": "deny", "path": "(("}, "path: not a valid regular expression"),
    ({"action": "deny", "user_agent": "x" * 600}, "user_agent"),
    ({"action": "deny", "country": "Germany"}, "two-letter"),
    ({"action": "deny", "asn": "ASx"}, "asn"),
    ({"action": "deny", "asn": [64500, 10**20]}, "asn: numbers from 0 to 4294967295"),
    ({"action": "deny", "asn": "AS4294967296"}, "asn: numbers from 0 to"),  # 32 bits
    ({"action": "deny", "asn": -1}, "asn: numbers from 0 to"),
    ({"action": "deny", "cidr": "1.2.3.4", "difficulty": 4}, "only challenge rules"),
    ({"action": "challenge", "cidr": "1.2.3.4", "difficulty": 99}, "1 to 32"),
    # a NUL made every reload raise (the rules froze) and every start fail
    ({"action": "deny", "cidr": "1.2.3.4", "list": "blocklist\x00.txt"}, "control characters"),
    ({"action": "deny", "list": "a\nb.txt"}, "control characters"),
])
def test_unusable_rules_are_refused_with_the_reason(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_rule(spec, "x")


def test_first_match_wins_across_index_and_scan() -> None:
    rs = RuleSet(rules(
        {"action": "allow", "cidr": "203.0.113.7"},
        {"action": "deny", "user_agent": "(?i)badbot"},
        {"action": "deny", "cidr": "203.0.113.0/24"},
        {"action": "allow", "path": "^/status"},
        {"action": "challenge", "cidr": "198.51.100.0/24"},
        {"action": "deny", "cidr": ["0.0.0.0/0", "::/0"]},
    ), {})
    assert rs.match(visitor("203.0.113.7", ua="BadBot/1")).label == "r0"  # allow comes first
    assert rs.match(visitor("203.0.113.8", ua="BadBot/1")).label == "r1"
    assert rs.match(visitor("203.0.113.8")).label == "r2"
    assert rs.match(visitor("192.0.2.1", path="/status")).label == "r3"
    assert rs.match(visitor("198.51.100.4")).label == "r4"
    # challenge rules skip API paths (the next rule decides); a key on a web path does not
    assert rs.match(visitor("198.51.100.4", bearer=True)).action == "challenge"
    assert rs.match(visitor("198.51.100.4", path="/v1/models")).label == "r5"
    assert rs.match(visitor("2001:db8::1")).label == "r5"
    assert RuleSet([], {}).match(visitor("192.0.2.1")) is None
    assert rs.api is not rs.web  # an address-only challenge rule: API clients' index lacks it


def test_without_address_challenges_web_and_api_share_one_index(tmp_path: Path) -> None:
    """API clients skip challenge rules; when no address-only rule challenges, the index
    they use would be the web's over again (10,000 deny rules: 0.3 MB a worker): one."""
    listed = tmp_path / "l.txt"
    listed.write_text("192.0.2.0/24\n")
    rs = RuleSet(rules({"action": "deny", "cidr": "203.0.113.0/24"},
                       {"action": "challenge", "cidr": "198.51.100.0/24", "path": "^/x"},
                       {"action": "allow", "list": "l"}), {"l": read_list(listed)})
    assert rs.api is rs.web
    for path in ("/login", "/v1/models"):  # a web page, an API client
        assert rs.match(visitor("203.0.113.9", path=path)).label == "r0"
        assert rs.match(visitor("192.0.2.9", path=path)).label == "r2"
    assert rs.match(visitor("198.51.100.9", path="/x")).label == "r1"
    assert rs.match(visitor("198.51.100.9", path="/x", bearer=True)).action == "challenge"
    assert rs.match(visitor("198.51.100.9", path="/v1/x")) is None


def test_config_rules_are_labelled_by_name_or_by_place(tmp_path: Path) -> None:
    """A config rule without a name is "config#N" (N its place in [[edge.rules]]) in metrics,
    Ray events and the listing; the label is made when used, the rule holds only N."""
    settings = EdgeSettings.model_validate({"rules": [
        {"action": "deny", "cidr": "203.0.113.0/24"},
        {"action": "deny", "cidr": "198.51.100.0/24", "name": "scrapers"},
        {"action": "deny", "user_agent": "BadBot"}]})
    book = RuleBook(settings, tmp_path, None)
    assert [r.label for r in book.current.rules] == ["config#0", "scrapers", "config#2"]
    assert [r.tag for r in book.current.rules] == [0, "scrapers", 2]
    assert book.current.match(visitor("203.0.113.5")).label == "config#0"
    assert book.current.match(visitor("192.0.2.1", ua="BadBot/2")).label == "config#2"


def test_a_range_is_held_compactly_and_reads_as_written() -> None:
    """Rules and lists hold ranges as (version, network number >> host bits, host bits):
    what the index looks up, without an ipaddress object each (2.4 MB for 10,000 rules)."""
    (net,) = parse_rule({"action": "deny", "cidr": "2001:db8:42::1/48"}, "x").cidrs
    assert net == Prefix(6, 0x20010DB80042, 80) and str(net) == "2001:db8:42::/48"
    mapped, = parse_rule({"action": "deny", "cidr": "::ffff:192.0.2.0/120"}, "x").cidrs
    assert str(mapped) == "192.0.2.0/24"
    assert ipaddress.ip_address("192.0.2.200") in mapped
    assert ipaddress.ip_address("192.0.3.1") not in mapped
    assert ipaddress.ip_address("::ffff:c000:2c8") not in mapped  # an IPv6 address
    assert "192.0.2.1" not in mapped  # text is not an address


def test_challenge_exemptions() -> None:
    for path in ("/v1/chat/completions", "/admin/v1/orgs", "/api/v2/summary.json",
                 "/status/feed.atom", "/blog.rss", "/sitemap.xml", "/healthz", "/readyz",
                 "/metrics"):
        assert is_api_path(path), path
    # the web pages, today's and the chat's to come, whatever the request carries (issue 12)
    for path in ("/login", "/logout", "/account", "/", "/c/abc123", "/chat"):
        assert not is_api_path(path), path
        assert not visitor("192.0.2.1", path=path, bearer=True).api_client, path


def test_conditions_combine() -> None:
    rs = RuleSet(rules({"action": "deny", "cidr": "10.0.0.0/8", "path": "^/login$"}), {})
    assert rs.match(visitor("10.1.2.3", path="/login")) is not None
    assert rs.match(visitor("10.1.2.3", path="/account")) is None
    assert rs.match(visitor("11.1.2.3", path="/login")) is None


def test_ipv4_mapped_rule_and_ipv6_prefixes() -> None:
    rs = RuleSet(rules({"action": "deny", "cidr": "::ffff:192.0.2.0/120"},
                       {"action": "deny", "cidr": "2001:db8:42::/48"}), {})
    assert rs.match(visitor("192.0.2.9")).label == "r0"
    assert rs.match(visitor("2001:db8:42:1::9")).label == "r1"
    assert rs.match(visitor("2001:db8:43::9")) is None


def test_list_file_format(tmp_path: Path) -> None:
    f = tmp_path / "vpn.txt"
    f.write_text("# VPN exits\n192.0.2.0/24  # provider A\n\n2001:db8::/32\nnot-an-ip\n"
                 "198.51.100.7\n")
    nets = read_list(f)
    assert [str(Prefix(*n)) for n in nets] == ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]


async def book_denying_a_list(tmp_path: Path, check_seconds: float
                              ) -> tuple[Path, EdgeSettings, RuleBook]:
    """A started rule book with one rule, deny what list.txt holds (192.0.2.0/24 at first)."""
    f = tmp_path / "list.txt"
    f.write_text("192.0.2.0/24\n")
    settings = EdgeSettings.model_validate({
        "lists_check_seconds": check_seconds, "rules": [{"action": "deny", "list": "list.txt"}]})
    book = RuleBook(settings, tmp_path, None)
    await book.start(None)
    return f, settings, book


async def test_list_file_reloads_on_change_and_on_sighup(tmp_path: Path) -> None:
    f, settings, book = await book_denying_a_list(tmp_path, 0.05)
    try:
        assert book.current.match(visitor("192.0.2.5")) is not None
        assert book.current.match(visitor("198.51.100.5")) is None
        old = book.current
        f.write_text("198.51.100.0/24\n")
        os.utime(f, (1, 1))  # a different mtime even on coarse file systems
        for _ in range(100):
            if book.current is not old:
                break
            await asyncio.sleep(0.02)
        assert book.current.match(visitor("198.51.100.5")) is not None
        assert book.current.match(visitor("192.0.2.5")) is None
        assert old.match(visitor("192.0.2.5")) is not None  # in-flight requests keep theirs
        # SIGHUP: a reload even when the mtime check would not see a change (same mtime/size)
        f.write_text("203.0.113.0/24\n")
        os.utime(f, (1, 1))
        book.settings = settings.model_copy(update={"lists_check_seconds": 3600})
        book._seen.clear()
        before = book.rebuilt
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if book.rebuilt > before:
                break
            await asyncio.sleep(0.02)
        assert book.current.match(visitor("203.0.113.5")) is not None
        # a vanished file keeps its last contents (a replace in progress is not "allow all")
        f.unlink()
        await book.reload()
        assert book.current.match(visitor("203.0.113.5")) is not None
    finally:
        await book.aclose()


LIST_LINES = ["1.2.3.4", "1.2.3.4/24", "1.2.3.4/024", "1.2.3.4/0", "1.2.3.4/32", "0.0.0.0/0",
              "255.255.255.255", "1.2.3.4/33", "1.2.3.4/", "1.2.3.4/+3", "1.2.3.4/-1",
              "1.2.3.4/3a", "1.2.3.4/٣", "1.2.3.4/²", "01.2.3.4", "1.2.3", "1.2.3.4.5",
              "256.1.1.1", "1.2.3.4/255.255.255.0", "1.2.3.4/0.0.0.255", "1.2.3.4/1/2",
              "1.2.3.4\x00", "2001:db8::/32", "::ffff:192.0.2.1", "::ffff:192.0.2.0/120",
              "2001:db8::1", "fe80::1%eth0", "::/0", "1.2.3.4/" + "0" * 5000 + "8",
              "１.2.3.4", "1.2.3.4 ", "", "x", "/24", "1.2.3.4/00000000000000032"]


@pytest.mark.parametrize("text", LIST_LINES)
def test_list_lines_read_without_ipaddress_mean_what_ipaddress_says(text: str) -> None:
    """A dotted IPv4 list line is read without ipaddress (100,000 lines: 0.7 → 0.2 s of
    Python); every line must give the range ipaddress gives, or be refused as it refuses it."""
    try:
        expected: Prefix | None = Prefix.of(parse_network(text))
    except RuleError:
        expected = None
    if expected is None:
        with pytest.raises(RuleError):
            list_range(text)
    else:
        got = list_range(text)
        assert got == expected
        assert type(got) is tuple  # not a Prefix: the collector untracks plain tuples of ints


def test_random_list_lines_read_as_ipaddress_reads_them() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        ip = ".".join(str(rng.choice([0, 1, 9, 10, 99, 100, 199, 255, 256, rng.randrange(300)]))
                      for _ in range(4))
        text = ip if rng.random() < 0.3 else f"{ip}/{rng.choice([0, 8, 17, 24, 31, 32, 33])}"
        try:
            expected: Prefix | None = Prefix.of(parse_network(text))
        except RuleError:
            expected = None
        try:
            got: Range | None = list_range(text)
        except RuleError:
            got = None
        assert got == expected, text


LIST_FILE = ("# feed é\r\n192.0.2.0/24  # ünïcode comment\r\n2001:db8::/32\r198.51.100.7\n"
             "not-an-ip\n\n  203.0.113.9 trailing words\n").encode() + b"\x00\xff\xc3\n" \
    + b"x" * 5000 + b"\n10.0.0.0/8"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 18])
async def test_a_list_read_in_chunks_of_any_size_reads_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """A list file is read a chunk of bytes at a time: a chunk may end inside a line or a
    UTF-8 character; CRLF, CR and LF all end lines, a bad byte is replaced, a last line needs
    no line break, and a run of thousands of characters without one is a bad line, not a
    buffer that grows — whatever the chunk size, at start or while serving."""
    f = tmp_path / "l.txt"
    f.write_bytes(LIST_FILE)
    monkeypatch.setattr(rules_module, "LIST_CHUNK", chunk)
    monkeypatch.setattr(rulebook_module, "LIST_CHUNK", chunk)
    ranges = read_list(f)
    assert [str(Prefix(*n)) for n in ranges] == [
        "192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32", "203.0.113.9/32", "10.0.0.0/8"]
    assert await read_list_in_turns(f) == ranges


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 18])
def test_a_list_is_checked_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             chunk: int) -> None:
    """Adding a rule checks its list file is text, reading a chunk at a time (it read the
    whole file: a wrong file of gigabytes in the worker's memory); a character cut by a
    chunk is fine, and a bad byte or NUL is reported where it is in the file."""
    monkeypatch.setattr(rules_module, "LIST_CHUNK", chunk)

    def whole(self: Path) -> bytes:
        raise AssertionError(f"{self} read whole")

    monkeypatch.setattr(Path, "read_bytes", whole)
    f = tmp_path / "l.txt"
    text = "# café ünï €𝄞\n192.0.2.0/24\n".encode()
    f.write_bytes(text * 3)
    check_list(f)
    for bad, x in [(b"\xff", 3), (b"\x00", 4), (b"\xe2\x82", 5), (b"\xc3A", 0)]:
        at = 2 * len(text) + x
        f.write_bytes(text * 2 + b"x" * x + bad + text)
        with pytest.raises(RuleError, match=f"is not a text file \\(byte {at}\\)"):
            check_list(f)
    f.write_bytes(text + "€".encode()[:2])  # cut at the end of the file
    with pytest.raises(RuleError, match=f"byte {len(text)}\\)"):
        check_list(f)


async def test_a_changed_list_file_is_parsed_on_the_loop_in_turns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list file that changes while serving is read in a thread but parsed on the event
    loop a turn at a time, with requests served between turns (100,000 lines are ~0.2 s of
    Python: in a thread, holding the GIL in 5-ms turns, that stalled every request); it is
    read a chunk of lines at a time, never held whole (a wrong file of gigabytes must not take
    the worker's memory); the requests meanwhile use the rule set before, and the new one
    holds every line."""
    f, _, book = await book_denying_a_list(tmp_path, 3600)
    loop_thread = threading.get_ident()
    steps: list[tuple[int, int]] = []  # (thread, the other task's turns) at each parse step
    chunks: list[int] = []  # bytes in each chunk read
    feed = ListParser.feed
    before = book.current

    def watched(self: ListParser, data: bytes) -> Any:
        chunks.append(len(data))
        for step in feed(self, data):
            steps.append((threading.get_ident(), turns.count))
            assert book.current is before  # the old set serves until the new is whole
            yield step

    monkeypatch.setattr(ListParser, "feed", watched)
    monkeypatch.setattr(rulebook_module, "LIST_CHUNK", 4096)  # ~270 lines here
    monkeypatch.setattr(turns_module, "TURN_SECONDS", 0.0)  # a turn after every step
    try:
        lines = [f"10.{i >> 8 & 255}.{i & 255}.0/24" for i in range(20_000)]
        f.write_text("# a feed\n" + "\n".join(lines) + "\nnot-an-address\n")
        async with counted_turns() as turns:
            await book.reload(stored=False)
        assert len(steps) >= 10 and {thread for thread, _ in steps} == {loop_thread}
        assert steps[-1][1] - steps[0][1] >= len(steps) - 1  # the others ran between steps
        assert len(chunks) > 50 and max(chunks) == 4096 and sum(chunks) == f.stat().st_size
        assert len(book.lists["list.txt"]) == 20_000
        gc.collect()  # the ranges are plain tuples of ints, which the collector leaves alone
        assert not any(map(gc.is_tracked, book.lists["list.txt"]))
        assert book.current.match(visitor("10.78.31.9")) is not None
        assert book.current.match(visitor("192.0.2.5")) is None
    finally:
        await book.aclose()


async def test_a_list_that_becomes_a_fifo_or_a_folder_keeps_its_contents_and_no_reader_hangs(
        tmp_path: Path) -> None:
    """A list file replaced by a FIFO blocked the reloading task for ever (open waits for a
    writer), and no change was read again; now anything but a regular file is unreadable:
    the last contents stay, and at start the configuration is refused."""
    f, settings, book = await book_denying_a_list(tmp_path, 3600)
    try:
        for make, remove, said in ((os.mkfifo, os.unlink, "not a regular file"),
                                   (os.mkdir, os.rmdir, "Is a directory")):
            f.unlink(missing_ok=True)
            make(f)
            async with asyncio.timeout(10):
                await book.reload(stored=False)
            assert book.current.match(visitor("192.0.2.5")) is not None
            with pytest.raises(ConfigError, match=said):
                RuleBook(settings, tmp_path, None).read_config_lists()
            remove(f)
    finally:
        await book.aclose()


async def test_the_periodic_reload_recompiles_only_what_changed(tmp_path: Path) -> None:
    """Every ``rules_reload_seconds`` the store's rules are read again; the rule set (10,000
    rules: ~75 ms of Python, holding the GIL from its thread) is compiled again only when they
    or a list file changed — it was every time, stalling every worker's answers by ~50 ms each
    30 s. A broadcast change or SIGHUP still recompiles at once."""
    settings = EdgeSettings.model_validate({"rules": [{"action": "deny", "cidr": "192.0.2.0/24"}]})
    async for store in migrated_store("sqlite", str(tmp_path)):
        records = EdgeRecords(store)
        book = RuleBook(settings, tmp_path, records)
        await book.start(None)
        try:
            compiled = book.rebuilt
            for _ in range(3):
                await book.reload()
            assert book.rebuilt == compiled  # nothing changed: the same rule set
            assert book.current.match(visitor("198.51.100.5")) is None
            await records.add_rule({"action": "deny", "cidr": "198.51.100.0/24"})
            await book.reload()
            assert book.rebuilt == compiled + 1
            assert book.current.match(visitor("198.51.100.5")) is not None
            await book.reload()
            assert book.rebuilt == compiled + 1
            rule = (await records.rules())[0]
            await records.remove_rule(rule.id)
            await book.reload()
            assert book.rebuilt == compiled + 2
            assert book.current.match(visitor("198.51.100.5")) is None
            await book.reload(always=True)  # a broadcast change, SIGHUP
            assert book.rebuilt == compiled + 3
        finally:
            await book.aclose()


def test_a_stored_rule_naming_no_possible_path_is_skipped_not_fatal() -> None:
    """A row an older version accepted (``"list": "x\\u0000"``) is skipped with a warning,
    so the other rules still load and reload."""
    assert stored_rule("rule_1", {"action": "deny", "list": "x\x00.txt"}) is None
    assert stored_rule("rule_2", {"action": "deny", "list": "x.txt"}) is not None


async def test_missing_list_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    from gatehouse.config import ConfigError

    settings = EdgeSettings.model_validate({"rules": [{"action": "deny", "list": "nope.txt"}]})
    with pytest.raises(ConfigError, match="nope.txt"):
        await RuleBook(settings, tmp_path, None).start(None)


def make_mmdb(path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"country": {"iso_code": "NL"},
                                                     "autonomous_system_number": 64500})
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "US"},
                                                        "autonomous_system_number": 64501})
    writer.to_db_file(str(path))


def test_geo_rules_with_a_generated_mmdb(tmp_path: Path) -> None:
    db = tmp_path / "geo.mmdb"
    make_mmdb(db)
    geo = Geo(str(db), str(db))
    try:
        assert geo(ipaddress.ip_address("192.0.2.1")) == ("NL", 64500)
        assert geo(ipaddress.ip_address("203.0.113.1")) == (None, None)
        rs = RuleSet(rules({"action": "deny", "country": ["nl"]},
                           {"action": "challenge", "asn": "AS64501"}), {})
        assert rs.match(visitor("192.0.2.1"), geo).label == "r0"
        assert rs.match(visitor("198.51.100.1"), geo).label == "r1"
        assert rs.match(visitor("203.0.113.1"), geo) is None
        assert rs.match(visitor("192.0.2.1"), None) is None  # no database: never matches
    finally:
        geo.close()


def test_geo_reads_other_free_database_layouts(tmp_path: Path) -> None:
    """IPinfo-style records: a top-level country_code and asn "AS64500"."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    db = tmp_path / "ipinfo.mmdb"
    writer = MMDBWriter(ip_version=6, database_type="ipinfo", ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country_code": "de", "asn": "AS64511"})
    writer.to_db_file(str(db))
    geo = Geo(str(db), None)
    try:
        assert geo(ipaddress.ip_address("203.0.113.9")) == ("DE", 64511)
    finally:
        geo.close()


def naive(rules_: list[Rule], lists: dict[str, list[Any]], v: Visitor) -> Rule | None:
    for rule in rules_:
        if v.api_client and rule.action == "challenge":
            continue
        nets = [*rule.cidrs, *map(Prefix._make, lists.get(rule.list_file or "", ()))]
        if nets and not any(v.ip in n for n in nets if n.version == v.ip.version):
            continue
        if rule.path and not rule.path.search(v.path):
            continue
        if rule.user_agent and not rule.user_agent.search(v.headers.get("user-agent", "")):
            continue
        return rule
    return None


def test_ten_thousand_rules_match_like_a_linear_scan() -> None:
    rng = random.Random(6)
    specs: list[dict[str, Any]] = []
    for i in range(10_000):
        roll = rng.random()
        if roll < 0.01:
            specs.append({"action": "deny", "path": f"^/p{rng.randrange(50)}"})
        elif roll < 0.02:
            specs.append({"action": "allow", "user_agent": f"bot{rng.randrange(50)}",
                          "cidr": f"10.{rng.randrange(4)}.0.0/16"})
        else:
            length = rng.choice([8, 12, 16, 20, 24, 28, 32])
            net = ipaddress.ip_network((rng.getrandbits(32) & 0x0FFFFFFF | 0x0A000000, length),
                                       strict=False)
            specs.append({"action": rng.choice(["allow", "deny", "challenge"]),
                          "cidr": str(net)})
    parsed = rules(*specs)
    rs = RuleSet(parsed, {})
    hits = 0
    for _ in range(3000):
        ip = str(ipaddress.IPv4Address(rng.getrandbits(32) & 0x0FFFFFFF | 0x0A000000))
        v = visitor(ip, path=f"/p{rng.randrange(60)}", ua=f"bot{rng.randrange(60)}",
                    bearer=rng.random() < 0.3)
        got, want = rs.match(v), naive(parsed, {}, v)
        assert got is want, (ip, v.path, got and got.label, want and want.label)
        hits += got is not None
    assert hits > 1000  # the sample exercises matches, not only misses


async def test_a_rule_set_built_on_the_loop_lets_requests_through_and_matches_the_same() -> None:
    """A rule change compiles the set on the loop a slice at a time (in a thread it held the
    GIL in 5-ms turns: 45-60 ms stalls with 10,000 rules): other tasks run between the
    slices, a list file's ranges are indexed a few thousand at a time, and what it builds
    matches exactly as the set built at once."""
    rng = random.Random(7)
    specs: list[dict[str, Any]] = [{"action": "deny", "list": "big"},
                                   {"action": "challenge", "list": "big", "path": "^/a"}]
    for i in range(2_000):
        net = ipaddress.ip_network((0x0A000000 | rng.getrandbits(24), rng.choice([16, 24, 32])),
                                   strict=False)
        spec: dict[str, Any] = {"action": rng.choice(["allow", "deny", "challenge"]),
                                "cidr": str(net)}
        if i % 100 == 0:
            spec["user_agent"] = f"bot{i}"
        specs.append(spec)
    big = [Prefix.of(ipaddress.ip_network((0xC0000000 | rng.getrandbits(30), 32)))
           for _ in range(10_000)]
    parsed, lists = rules(*specs), {"big": big}
    async with counted_turns() as turns:
        built = await RuleSet.compile(parsed, lists, turn_seconds=0)
    # one turn at least per rule and per part of the list (10,000 ranges: 20 parts, twice)
    assert turns.count >= len(parsed) + 4
    at_once = RuleSet(parsed, lists)
    for i in range(3000):
        ip = str(ipaddress.IPv4Address(rng.choice([0x0A000000, 0xC0000000])
                                       | rng.getrandbits(24)))
        v = visitor(ip, path=rng.choice(["/a", "/b"]), ua=f"bot{rng.randrange(0, 2000, 100)}",
                    bearer=rng.random() < 0.3)
        assert built.match(v) is at_once.match(v)
        if i < 100:  # the linear scan walks the 10,000 listed ranges each time
            assert built.match(v) is naive(parsed, lists, v)
    listed = visitor(str(ipaddress.IPv4Address(big[5].key << big[5].shift)))
    assert built.match(listed) is parsed[0]


def test_the_regex_unions_find_what_any_rule_would() -> None:
    """The scan skips regex rules whose kind's union found nothing: the union must find
    whatever any member finds, with each member's own flags (a leading (?i) stays its own)."""
    sources = ("(?i)Scanner-1", "^/wp-2/", "bot$", "(?s)a.b", r"end\Z")
    members = [Regex.parse(p) for p in sources]
    union = any_of(members)
    assert union is not None
    for text in ("x SCANNER-1 y", "/wp-2/login", "goodbot", "a\nb", "scanner-2", "/x/wp-2/",
                 "bots", "Bot", "ab", "goodbot\n", "the end", "the end\n"):
        assert union.search(text) == any(m.search(text) for m in members) \
            == any(re.search(p, text) for p in sources), text
    assert any_of([]) is None
    # end to end: a case-insensitive UA rule still wins over a later address rule
    parsed = rules({"action": "deny", "user_agent": "(?i)evilbot"},
                   {"action": "allow", "cidr": "192.0.2.0/24"})
    rs = RuleSet(parsed, {})
    assert rs.match(visitor("192.0.2.9", ua="Mozilla EVILBOT/2")) is parsed[0]
    assert rs.match(visitor("192.0.2.9", ua="Mozilla")) is parsed[1]
