"""Reading a server's certificate chain: is it anchored in a public CA, or was the connection
intercepted — a company proxy, antivirus or "SSL inspection" box that re-signs every site with
its own private root (the seeds' "company Wi-Fi / SSL inspection" branch)?

The judgement is against a :class:`TrustStore`: the public one (certifi's Mozilla bundle) by
default, injectable for tests; the machine's own store is consulted to say whether the private
root was installed here (a managed device: browsers trust it, other programs may not).
"""

from __future__ import annotations

import ipaddress
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

# issuers of well-known inspection products: named in the report when one is recognised
INSPECTION_PRODUCTS = (
    "zscaler", "fortinet", "fortigate", "palo alto", "netskope", "umbrella", "blue coat",
    "bluecoat", "symantec web", "sophos", "forcepoint", "websense", "check point", "barracuda",
    "mcafee web gateway", "kaspersky", "avast", "avg", "eset", "bitdefender", "cloudflare for teams",
    "cloudflare gateway", "mitmproxy", "charles proxy", "fiddler", "portswigger", "cisco",
    "smoothwall", "lightspeed", "securly", "contentkeeper", "untangle")


def name_of(name: x509.Name) -> str:
    """The CN (or O) of a name, the way people say which CA issued something."""
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = name.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return name.rfc4514_string()


def load_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; one that does not parse is skipped, not fatal."""
    out = []
    end = b"-----END CERTIFICATE-----"
    for block in data.split(end):
        if b"-----BEGIN CERTIFICATE-----" in block:
            try:
                with warnings.catch_warnings():  # a few public roots bend RFC 5280 (serials)
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    out.append(x509.load_pem_x509_certificate(block + end))
            except ValueError:
                continue
    return out


class TrustStore:
    """Root certificates, looked up by subject."""

    def __init__(self, name: str, certs: Iterable[x509.Certificate]) -> None:
        self.name = name
        self.by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in certs:
            self.by_subject.setdefault(cert.subject, []).append(cert)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_subject.values())

    @classmethod
    def from_pem_file(cls, path: str | Path, name: str | None = None) -> TrustStore:
        return cls(name or str(path), load_pem(Path(path).read_bytes()))

    @classmethod
    def public(cls) -> TrustStore:
        import certifi

        return cls.from_pem_file(certifi.where(), "public CAs (certifi)")

    @classmethod
    def system(cls) -> TrustStore:
        """The operating system's store (OpenSSL's default paths), as far as it can be read."""
        paths = ssl.get_default_verify_paths()
        if paths.cafile and Path(paths.cafile).is_file():
            return cls.from_pem_file(paths.cafile, "this machine's store")
        certs: list[x509.Certificate] = []
        if paths.capath and Path(paths.capath).is_dir():
            for file in sorted(Path(paths.capath).iterdir()):
                if file.is_file():
                    certs += load_pem(file.read_bytes())
        return cls("this machine's store", certs)

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        for candidate in self.by_subject.get(cert.issuer, []):
            if candidate == cert:
                return candidate
            try:
                cert.verify_directly_issued_by(candidate)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return candidate
        return None

    def anchors(self, chain: list[x509.Certificate]) -> x509.Certificate | None:
        """The root in this store that the chain leads to, if any (checked signatures)."""
        for cert in chain:
            if cert in self.by_subject.get(cert.subject, []):
                return cert
            anchor = self.issuer_of(cert)
            if anchor is not None:
                return anchor
        return None


@dataclass(slots=True)
class ChainVerdict:
    subject: str
    issuer: str
    top: str                 # the last certificate's issuer: the root the server points at
    not_after: datetime
    name_matches: bool
    public: bool             # anchored in the public store
    installed: bool | None   # anchored in this machine's store (None: not checked)
    private_root: bool       # the chain ends in a self-signed root that is not public
    product: str | None      # a recognised inspection product among the issuers

    @property
    def intercepted(self) -> bool:
        return not self.public

    @property
    def explanation(self) -> str:
        if self.public:
            return f"issued by {self.issuer}, a public CA"
        who = f" ({self.product})" if self.product else ""
        where = (" installed on this machine (a managed device: SSL inspection)"
                 if self.installed else " not trusted by this machine either")
        if self.private_root:
            return f"re-signed by the private root {self.top!r}{who},{where}"
        return (f"issued by {self.issuer!r}{who}, which no public CA vouches for,{where} "
                "(or the server sends an incomplete chain)")


def name_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    host = host.lower().rstrip(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == host or (pattern.startswith("*.") and
                               host.partition(".")[2] == pattern[2:] and "." in pattern[2:]):
            return True
    return False


def judge(chain: list[x509.Certificate], host: str, public: TrustStore,
          system: TrustStore | None = None) -> ChainVerdict:
    """Judge a chain as the server sent it (leaf first)."""
    leaf, last = chain[0], chain[-1]
    issuers = " ".join([leaf.issuer.rfc4514_string().lower()] +
                       [c.subject.rfc4514_string().lower() for c in chain[1:]])
    product = next((p for p in INSPECTION_PRODUCTS if p in issuers), None)
    anchored = public.anchors(chain) is not None
    return ChainVerdict(
        subject=name_of(leaf.subject), issuer=name_of(leaf.issuer), top=name_of(last.issuer),
        not_after=leaf.not_valid_after_utc, name_matches=name_matches(leaf, host),
        public=anchored,
        installed=None if system is None else system.anchors(chain) is not None,
        private_root=last.issuer == last.subject and not anchored,
        product=None if anchored else product)
