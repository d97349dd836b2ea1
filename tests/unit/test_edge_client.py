"""The client address: forged forwarding headers change nothing; trusted proxies are believed
(right to left); IPv4, IPv6, IPv4-mapped, Forwarded's brackets and ports; network grouping."""

from __future__ import annotations

import ipaddress

import pytest

from gatehouse.edge.client import ClientResolver, network_of, parse_ip

ip = ipaddress.ip_address


@pytest.mark.parametrize("text, want", [
    ("203.0.113.7", "203.0.113.7"), ("203.0.113.7:4711", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"), ("[2001:db8::1]:443", "2001:db8::1"),
    ('"[2001:db8::1]"', "2001:db8::1"), ("::ffff:198.51.100.2", "198.51.100.2"),
    ("fe80::1%eth0", "fe80::1"), ("unknown", None), ("_hidden", None), ("", None),
    ("999.1.1.1", None)])
def test_parse_ip(text: str, want: str | None) -> None:
    got = parse_ip(text)
    assert (str(got) if got else None) == want


def test_untrusted_peer_cannot_forge_its_address() -> None:
    r = ClientResolver([])
    assert r.resolve("198.51.100.9", {"x-forwarded-for": "1.2.3.4"}) == ip("198.51.100.9")
    r = ClientResolver(["10.0.0.0/8"])
    assert r.resolve("198.51.100.9", {"x-forwarded-for": "1.2.3.4"}) == ip("198.51.100.9")


def test_trusted_proxies_are_walked_right_to_left() -> None:
    r = ClientResolver(["10.0.0.0/8", "2001:db8:ffff::/48"])
    # the client forged "1.2.3.4"; nginx (10.0.0.2) appended what it saw; the LB (peer) too
    headers = {"x-forwarded-for": "1.2.3.4, 203.0.113.50, 10.0.0.2"}
    assert r.resolve("10.0.0.1", headers) == ip("203.0.113.50")
    assert r.resolve("10.0.0.1", {"x-forwarded-for": "10.0.0.3, 10.0.0.2"}) == ip("10.0.0.3")
    assert r.resolve("10.0.0.1", {}) == ip("10.0.0.1")
    # a trusted hop that wrote garbage: the last address known for sure
    assert r.resolve("10.0.0.1", {"x-forwarded-for": "1.2.3.4, nonsense"}) == ip("10.0.0.1")
    assert r.resolve("2001:db8:ffff::5", {"x-forwarded-for": "2001:db8::77"}) == \
        ip("2001:db8::77")
    # IPv4-mapped peers count as the IPv4 address for trust too
    assert r.resolve("::ffff:10.0.0.1", {"x-forwarded-for": "203.0.113.1"}) == \
        ip("203.0.113.1")


def test_forwarded_header_when_configured() -> None:
    r = ClientResolver(["10.0.0.0/8"], "forwarded")
    headers = {"forwarded": 'for=1.2.3.4, for="[2001:db8::9]:5000";proto=https, for=10.0.0.2',
               "x-forwarded-for": "9.9.9.9"}  # not the configured header: ignored
    assert r.resolve("10.0.0.1", headers) == ip("2001:db8::9")
    assert r.resolve("10.0.0.1", {"forwarded": "for=unknown"}) == ip("10.0.0.1")


def test_network_of() -> None:
    assert network_of(ip("203.0.113.77"), 24, 64) == "203.0.113.0/24"
    assert network_of(ip("2001:db8:1:2:3::4"), 24, 48) == "2001:db8:1::/48"
    assert network_of(ip("203.0.113.77"), 32, 64) == "203.0.113.77/32"
