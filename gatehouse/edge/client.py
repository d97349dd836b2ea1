"""The client's address: the socket peer, or what trusted proxies say it was.

``X-Forwarded-For`` (or RFC 7239 ``Forwarded``) is believed only when the hop that sent it is
in ``[edge] trusted_proxies``. The list is walked right to left: each entry was written by the
hop to its right, so it is believed while that hop is trusted; the first untrusted address is
the client. Anything a client writes further left is never reached, so forging the header
changes nothing. Only the one header named by ``[edge] forwarded_header`` is read: a proxy
that sets one does not strip the other, so reading both would let a client choose.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from gatehouse.edge.visitor import IPAddress

UNKNOWN = ipaddress.IPv4Address("0.0.0.0")  # no peer (a unix socket, or a test transport)
CACHE_SIZE = 65_536  # addresses remembered parsed (and grouped); forgotten wholesale when full


def parse_ip(text: str | None) -> IPAddress | None:
    """An address from a socket peer or a forwarded hop: ``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]:443``, ``"[2001:db8::1]"``; IPv4-mapped IPv6 becomes IPv4."""
    if not text:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 has several colons)
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """A set of networks with ``ip in proxies`` membership."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        nets = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs]
        self.v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
        self.v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv4Address):
            return any(ip in n for n in self.v4)
        return any(ip in n for n in self.v6)


def forwarded_hops(headers: dict[str, str], header: str) -> list[str]:
    """The hop addresses of ``X-Forwarded-For`` or ``Forwarded`` (its ``for=`` parameters),
    leftmost (farthest) first; repeated headers arrive joined with ", "."""
    value = headers.get(header)
    if not value:
        return []
    if header == "x-forwarded-for":
        return [hop.strip() for hop in value.split(",")]
    hops = []
    for element in value.split(","):
        found = ""
        for pair in element.split(";"):
            name, _, val = pair.strip().partition("=")
            if name.strip().lower() == "for":
                found = val.strip()
        hops.append(found)
    return hops


class ClientResolver:
    """Resolves the client address of a request from its peer and headers."""

    def __init__(self, trusted: Iterable[str], header: str = "x-forwarded-for") -> None:
        self.trusted = TrustedProxies(trusted)
        self.header = header
        # parsing an address costs µs and the same peers come back again and again
        self._peers: dict[str | None, IPAddress] = {}

    def resolve(self, peer: str | None, headers: dict[str, str]) -> IPAddress:
        ip = self._peers.get(peer)
        if ip is None:
            if len(self._peers) >= CACHE_SIZE:
                self._peers.clear()
            ip = self._peers[peer] = parse_ip(peer) or UNKNOWN
        if not self.trusted or ip not in self.trusted:
            return ip
        for hop in reversed(forwarded_hops(headers, self.header)):
            written = parse_ip(hop)
            if written is None:  # a trusted hop wrote something unusable: it is the client
                return ip
            ip = written
            if ip not in self.trusted:
                return ip
        return ip


@functools.lru_cache(maxsize=CACHE_SIZE)  # the edge and the quota stage ask per request
def network_of(ip: IPAddress, prefix_v4: int, prefix_v6: int) -> str:
    """The network ``ip`` is grouped into, e.g. ``203.0.113.0/24`` or ``2001:db8::/64``."""
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network((ip, prefix), strict=False))
