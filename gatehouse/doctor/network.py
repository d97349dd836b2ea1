"""Step 2: the network path. For each host of the profile: DNS, TCP connect and the TLS
handshake, each timed, and the certificate chain judged for interception (certs.py); and what
the environment says about proxies and VPNs."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from gatehouse.doctor.certs import ChainVerdict, TrustStore, judge
from gatehouse.doctor.profiles import Endpoint

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
# interface names that VPN clients create (macOS keeps utun0–3 for itself, so utun is "maybe")
VPN_PREFIXES = ("tun", "tap", "wg", "ppp", "ipsec", "tailscale", "zt", "nordlynx", "proton",
                "gpd", "cscotun", "utun", "vpn", "mullvad", "wireguard", "pango")


@dataclass(slots=True)
class HostResult:
    endpoint: Endpoint
    addresses: list[str] = field(default_factory=list)
    dns_ms: float | None = None
    tcp_ms: float | None = None
    tls_ms: float | None = None
    tls_version: str | None = None
    chain: ChainVerdict | None = None
    failed_step: str | None = None  # dns | tcp | tls
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.failed_step is None

    @property
    def intercepted(self) -> bool:
        return self.chain is not None and self.chain.intercepted


@dataclass(slots=True)
class Environment:
    proxies: dict[str, str]        # variable → value, credentials masked
    vpn_interfaces: list[str]

    @property
    def proxied(self) -> bool:
        return any(k != "NO_PROXY" for k in self.proxies)


def mask(value: str) -> str:
    """``http://user:secret@proxy:3128`` → ``http://user:***@proxy:3128``."""
    url = urlsplit(value)
    if url.password:
        netloc = url.netloc.replace(f":{url.password}@", ":***@")
        return urlunsplit(url._replace(netloc=netloc))
    return value


def read_environment(env: Mapping[str, str], interfaces: list[str] | None = None) -> Environment:
    proxies = {}
    for name in PROXY_VARS:
        value = env.get(name) or env.get(name.lower())
        if value:
            proxies[name] = mask(value)
    if interfaces is None:
        try:
            interfaces = [name for _, name in socket.if_nameindex()]
        except OSError:
            interfaces = []
    vpn = [n for n in interfaces if n.lower().startswith(VPN_PREFIXES)]
    return Environment(proxies, vpn)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def chain_of(writer: asyncio.StreamWriter) -> list[x509.Certificate]:
    """The chain as the server sent it. Python < 3.13 has no public call for it; the private
    one has been there since 3.10. Without either, the leaf alone."""
    obj = writer.get_extra_info("ssl_object")
    getter = getattr(obj, "get_unverified_chain", None) or getattr(
        getattr(obj, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [x509.load_der_x509_certificate(
            c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            for c in chain]
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return [x509.load_der_x509_certificate(der)] if der else []


async def probe_host(endpoint: Endpoint, public: TrustStore, system: TrustStore | None = None,
                     timeout: float = 5.0) -> HostResult:
    result = HostResult(endpoint)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        result.failed_step, result.error = "dns", _describe(exc, "no answer")
        return result
    result.dns_ms = _ms(start)
    result.addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    start = time.perf_counter()
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(result.addresses[0], endpoint.port), timeout)
    except (OSError, TimeoutError) as exc:
        result.failed_step, result.error = "tcp", _describe(exc, "connect timed out")
        return result
    result.tcp_ms = _ms(start)
    try:
        if endpoint.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # we judge the chain ourselves, whatever it is
            start = time.perf_counter()
            try:
                await asyncio.wait_for(writer.start_tls(ctx, server_hostname=endpoint.host),
                                       timeout)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                result.failed_step, result.error = "tls", _describe(exc, "handshake timed out")
                return result
            result.tls_ms = _ms(start)
            obj = writer.get_extra_info("ssl_object")
            result.tls_version = obj.version() if obj is not None else None
            chain = chain_of(writer)
            if chain:
                result.chain = judge(chain, endpoint.host, public, system)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
    return result


def _describe(exc: BaseException, timed_out: str) -> str:
    if isinstance(exc, TimeoutError):
        return timed_out
    return f"{type(exc).__name__}: {exc}"


async def probe_network(endpoints: list[Endpoint], public: TrustStore,
                        system: TrustStore | None = None, timeout: float = 5.0
                        ) -> list[HostResult]:
    return list(await asyncio.gather(*(probe_host(e, public, system, timeout)
                                       for e in endpoints)))
