"""Where the doctor looks: the hosts, status page, API and web addresses of one service.

``gatehouse`` is one of our instances (its own host, ``/api/v2/summary.json``, ``/v1``,
``/login``); ``openai`` is OpenAI's ChatGPT and API, with the hosts a browser needs for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8787"

OPENAI_HOSTS = ("chatgpt.com", "chat.openai.com", "openai.com", "api.openai.com",
                "oaistatic.com", "oaiusercontent.com", "challenges.cloudflare.com",
                "status.openai.com")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port to resolve, connect to and (for ``tls``) shake hands with."""

    host: str
    port: int
    tls: bool

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, tls: bool = True) -> Endpoint:
        """``host``, ``host:port`` or a URL (``https://host:port/…``)."""
        if "://" in text:
            url = urlsplit(text)
            secure = url.scheme == "https"
            return cls(url.hostname or "", url.port or (443 if secure else 80), secure)
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit() and "]" not in port:
            return cls(host.strip("[]"), int(port), tls)
        return cls(text.strip("[]"), 443 if tls else 80, tls)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    api_base: str          # ends in /v1
    web_url: str           # the page a browser opens first
    status_url: str        # a Statuspage v2 summary.json
    endpoints: tuple[Endpoint, ...]
    components: tuple[str, ...]  # status components that matter by default (besides the model)


def gatehouse_profile(url: str) -> Profile:
    root = url.rstrip("/")
    root = root.removesuffix("/v1")
    return Profile("gatehouse", root + "/v1", root + "/login", root + "/api/v2/summary.json",
                   (Endpoint.parse(root),), ("API",))


def openai_profile(url: str | None) -> Profile:
    api = (url or "https://api.openai.com").rstrip("/")
    if not api.endswith("/v1"):
        api += "/v1"
    return Profile("openai", api, "https://chatgpt.com/",
                   "https://status.openai.com/api/v2/summary.json",
                   tuple(Endpoint(host, 443, True) for host in OPENAI_HOSTS), ("API",))


PROFILES = ("gatehouse", "openai")


def profile_for(name: str, url: str | None) -> Profile:
    if name == "openai":
        return openai_profile(url)
    if name == "gatehouse":
        return gatehouse_profile(url or DEFAULT_URL)
    raise ValueError(f"unknown profile {name!r}: one of {', '.join(PROFILES)}")
