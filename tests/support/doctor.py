"""What the doctor's tests serve on 127.0.0.1: hostile answers (any status, headers and body;
too large, too slow), a Statuspage v2 summary, TLS servers with certificates from CAs made on
the spot (a private "inspection" CA, or a "public" one the test trusts), and ``gatehouse
doctor`` run in its own process."""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.procs import free_port

# -- hostile servers: any status, headers and body, too large, too slow --------------------------

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


def answer(body: bytes, status: int = 200, headers: dict[str, str] | None = None,
           length: bool = True) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if length:
            h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handle


def chunked(piece: bytes, times: int) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(times):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the reader stopped early, as it should
    return handle


def drip(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("content-length", "100")
    h.end_headers()
    try:
        for _ in range(40):  # at most ~8 s, whatever the client does
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass


@contextmanager
def hostile(routes: dict[str, Handler]) -> Iterator[str]:
    class Server(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            routes[self.path](self)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            routes[self.path](self)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- a Statuspage v2 summary.json ------------------------------------------------------------

COMPONENTS = [
    {"id": "c-api", "name": "API", "status": "operational", "group_id": "g-apis", "group": False},
    {"id": "c-chat", "name": "Chat Completions", "status": "operational", "group_id": "g-apis",
     "group": False},
    {"id": "g-apis", "name": "APIs", "status": "operational", "group_id": None, "group": True},
    {"id": "c-web", "name": "ChatGPT", "status": "operational", "group_id": None, "group": False},
    {"id": "c-sora", "name": "Sora", "status": "operational", "group_id": None, "group": False},
]


def incident(name: str, component_ids: list[str], status: str = "investigating",
             impact: str = "major") -> dict[str, Any]:
    touched = [c for c in COMPONENTS if c["id"] in component_ids]
    return {"id": f"inc-{abs(hash(name)) % 10**6}", "name": name, "status": status,
            "impact": impact, "shortlink": f"https://stspg.io/{abs(hash(name)) % 10**6}",
            "created_at": "2026-01-01T10:00:00Z", "updated_at": "2026-01-01T10:05:00Z",
            "components": touched,
            "incident_updates": [{"id": "u1", "status": status,
                                  "body": f"We are investigating {name.lower()}.",
                                  "created_at": "2026-01-01T10:05:00Z"}]}


def summary(*incidents: dict[str, Any], degraded: dict[str, str] | None = None
            ) -> dict[str, Any]:
    components = [dict(c, status=(degraded or {}).get(c["id"], c["status"]))
                  for c in COMPONENTS]
    live = [i for i in incidents if i["status"] not in ("resolved", "postmortem")]
    return {"page": {"id": "p1", "name": "Example Status", "url": "https://status.example.com",
                     "time_zone": "Etc/UTC", "updated_at": "2026-01-01T10:05:00Z"},
            "status": {"indicator": max((i["impact"] for i in live), default="none"),
                       "description": "Partial System Outage" if live else "All Systems Operational"},
            "components": components, "incidents": list(incidents),
            "scheduled_maintenances": []}


@contextmanager
def serve_json(routes: dict[str, Any]) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 answering each path with its JSON (404 otherwise)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path.split("?")[0])
            raw = json.dumps(body).encode() if body is not None else b"{}"
            self.send_response(200 if body is not None else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- certificates and TLS servers ---------------------------------------------------------------


@dataclass(slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def make_ca(cn: str, org: str = "Test CAs", issuer: Issued | None = None) -> Issued:
    """A root (self-signed) or, with ``issuer``, an intermediate CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = _name(cn, org)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key)


def make_leaf(ca: Issued, host: str = "127.0.0.1") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    try:
        san: x509.GeneralName = x509.IPAddress(ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (x509.CertificateBuilder().subject_name(_name(host, "Test Site"))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, hashes.SHA256()))
    return Issued(cert, key)


@contextmanager
def tls_server(tmp: Path, leaf: Issued, *chain: Issued) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 presenting ``leaf`` and ``chain``; yields its port. It
    answers every GET with 404 JSON: the doctor's TLS probe only needs the handshake."""
    port = free_port()
    cert_file, key_file = tmp / f"leaf-{port}.pem", tmp / f"leaf-{port}.key"
    cert_file.write_bytes(leaf.pem() + b"".join(c.pem() for c in chain))
    key_file.write_bytes(leaf.key_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return None

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[Any, Any]:
            sock, addr = super().get_request()
            return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

        def handle_error(self, request: Any, client_address: Any) -> None:
            return None  # a client that only shakes hands and leaves is not an error here

    server = Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


# -- the doctor in its own process ---------------------------------------------------------------


@dataclass(slots=True)
class Run:
    code: int
    report: dict[str, Any]
    stderr: str


def run_doctor(*args: str, timeout: float = 60) -> Run:
    """``gatehouse doctor ARGS --json - --no-input``, without keys or proxies from the
    environment the tests run in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GATEHOUSE_API_KEY", "OPENAI_API_KEY", "GATEHOUSE_URL")
           and not k.lower().endswith("_proxy")}
    r = subprocess.run([sys.executable, "-m", "gatehouse", "doctor", *args, "--json", "-",
                        "--no-input"], check=False, capture_output=True, text=True, timeout=timeout,
                       env={**env, "COLUMNS": "200"}, stdin=subprocess.DEVNULL)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"exit {r.returncode}, no JSON:\n{r.stdout}\n{r.stderr}") from None
    return Run(r.returncode, report, r.stderr)
