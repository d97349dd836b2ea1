"""Typed settings: ``gatehouse.toml`` overlaid with ``GATEHOUSE_*`` environment variables.

Environment variables address keys with double underscores: ``GATEHOUSE_SERVER__PORT=9000``
sets ``[server] port``; values are read as TOML values when they parse (``true``, ``5``,
``["a"]``) and as plain strings otherwise. ``GATEHOUSE_CONFIG`` names the file.

Every problem is reported as a :class:`ConfigError` naming the file, the key and the reason.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from gatehouse.edge.rules import DIFFICULTY, Action, parse_rule  # stdlib only: no cycle
from gatehouse.quota.tokenizer import check as check_tokenizer  # stdlib only: no cycle
from gatehouse.telemetry.otlp_settings import (  # stdlib only
    check_endpoint,
    check_headers,
)
from gatehouse.upstream.heads import check_header  # stdlib only

ENV_PREFIX = "GATEHOUSE_"
DEFAULT_PATH = "gatehouse.toml"
# levels of tables and arrays a configuration may have: the deepest real key has 4
# ([[edge.rules]] cidr = [...]). Deeper is refused before anything walks it recursively:
# tomllib, the merge and pydantic each ran out of Python's stack on ~1,000 levels
MAX_DEPTH = 32
TOO_DEEP = f"nested more than {MAX_DEPTH} levels of tables and arrays deep"


class ConfigError(Exception):
    """A configuration problem a person can fix: where it is and why it is wrong."""

    def __init__(self, source: str, key: str, reason: str,
                 more: list[tuple[str, str]] | None = None) -> None:
        self.source, self.key, self.reason = source, key, reason
        # every problem found, the first one included: (key, reason)
        self.problems = [(key, reason), *(more or [])]
        super().__init__("\n".join(f"{source}: {k}: {r}" if k else f"{source}: {r}"
                                    for k, r in self.problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=256)
    # with several workers (on Linux): a listening socket per worker in one SO_REUSEPORT
    # group, the kernel spreading connections over them (gatehouse/edge/listeners.py); false:
    # one socket shared by the workers, each taking what is waiting when it wakes
    reuse_port: bool = True
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    # how long a graceful shutdown waits for open streams before closing them
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    # the request head (docs/security.md): nginx's large_client_header_buffers is 4 × 8 KiB,
    # h11's whole-head limit 16 KiB; past these → 414 / 431 and the connection is closed
    max_request_line_bytes: int = Field(8192, ge=256, le=1 << 20)
    max_header_bytes: int = Field(8192, ge=256, le=1 << 20)       # one header, name + value
    max_head_bytes: int = Field(32768, ge=1024, le=1 << 22)       # request line + all headers
    max_headers: int = Field(100, ge=8, le=10_000)
    # slow clients: the head must arrive within head_timeout of its first byte (a new
    # connection's too); a body may pause at most body_timeout between reads; an idle
    # keep-alive connection is closed after keepalive_timeout; an answer the client stops
    # reading (the socket's buffers full) is cut after send_timeout without progress, or once
    # its waits have emptied a bucket of send_timeout seconds refilled at min_send_rate (so a
    # client reading a few bytes now and then cannot hold it for ever), freeing its admission
    # slot and upstream connection
    head_timeout: float = Field(10.0, gt=0, le=3600)
    body_timeout: float = Field(30.0, gt=0, le=3600)
    keepalive_timeout: float = Field(30.0, gt=0, le=3600)
    send_timeout: float = Field(60.0, gt=0, le=3600)
    min_send_rate: int = Field(1024, ge=1, le=1 << 30)  # bytes a second
    # open connections per client address (peers in [edge] trusted_proxies are exempt) and in
    # all; 0 = automatic: min(16384, half the process's file-descriptor limit)
    max_connections_per_address: int = Field(256, ge=1)
    max_connections: int = Field(0, ge=0)
    # build the admin API (FastAPI, ~13 MB) when a worker starts, not on its first /admin/
    # request: that build (~1.4 s of Python, in a thread) holds up the worker's other
    # requests, by up to ~0.1 s at a time (docs/configuration.md)
    admin_at_start: bool = False


class TelemetrySettings(_Section):
    access_log: bool = True
    metrics: bool = True
    # the request log in the store: one row per request, looked up by any of its ids
    request_log: bool = True
    request_log_days: float = Field(30.0, gt=0)
    # per worker: above this many records a second, successes are kept 1 in 10 (errors always)
    request_log_sample_above: float = Field(1000.0, gt=0)
    # records waiting for the batch writer; beyond it they are dropped and counted
    request_log_buffer: int = Field(50_000, ge=100)
    # minute rollups (every request counted, none sampled), kept this many days
    rollups: bool = True
    rollup_minute_days: float = Field(14.0, gt=0)
    # compacted rollups (telemetry/compaction.py): hours cover the 90-day window, days a year
    rollup_hour_days: float = Field(100.0, gt=0)
    rollup_day_days: float = Field(400.0, gt=0)

    @model_validator(mode="after")
    def _coarser_rollups_kept_longer(self) -> TelemetrySettings:
        if not self.rollup_minute_days <= self.rollup_hour_days <= self.rollup_day_days:
            raise ValueError("rollups must be kept at least as long as the finer ones: "
                             "rollup_minute_days ≤ rollup_hour_days ≤ rollup_day_days "
                             f"(got {self.rollup_minute_days:g}, {self.rollup_hour_days:g}, "
                             f"{self.rollup_day_days:g})")
        return self

    # OTLP/HTTP export of spans and the GenAI metrics (docs/telemetry.md); off when unset.
    # The collector's base URL: /v1/traces and /v1/metrics are appended
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = Field(default_factory=dict, repr=False)  # secrets: never logged
    otlp_service_name: str = Field("gatehouse", min_length=1, max_length=255)
    otlp_sample_ratio: float = Field(1.0, ge=0, le=1)  # of traces not already sampled by the caller
    otlp_metrics_interval: float = Field(15.0, ge=0.5, le=3600)  # seconds between metric exports

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(one_line_url(value.strip()))

    @field_validator("otlp_headers")
    @classmethod
    def _otlp_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_serializer("otlp_headers")
    def _hide_otlp_headers(self, value: dict[str, str]) -> dict[str, str]:
        return dict.fromkeys(value, "(hidden)")  # `gatehouse check` shows the names only


class RequestLimits(_Section):
    """How much work one request may ask for, beyond its size in bytes; more is a 400 naming
    the field. Not rate limits (those are per tier)."""

    # levels of arrays and objects in a body; orjson writes at most 255, OpenAI schemas need ~20
    max_json_depth: int = Field(64, ge=8, le=128)
    # arrays and objects in a body, all levels: every stage that walks a body (checks, the
    # texts a quota counts) walks them; real requests hold tens of thousands at most
    max_json_containers: int = Field(100_000, ge=1_000)
    max_messages: int = Field(4096, ge=1)
    max_tools: int = Field(128, ge=1)            # OpenAI's own limit
    max_stop: int = Field(16, ge=1)              # OpenAI takes 4; vLLM and llama.cpp more
    max_n: int = Field(128, ge=1)                # OpenAI's own limit
    max_inputs: int = Field(2048, ge=1)          # embeddings inputs / completion prompts; OpenAI's
    # embeddings: inputs × dimensions; 2048 × 3072 is OpenAI's largest model on a full batch
    max_embedding_values: int = Field(2048 * 3072, ge=1)
    # an audio upload (transcriptions, translations), the whole multipart body: OpenAI's limit
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1024)


def one_line_url(value: str) -> str:
    """``value`` when it has no control character; ValueError naming the first otherwise (a
    newline or a NUL in a URL made every request to it fail, or split a request's head)."""
    for i, char in enumerate(value):
        if ord(char) < 32 or char == "\x7f":
            raise ValueError(f"has a control character (U+{ord(char):04X} at position {i}): "
                             "a URL is one line of printable characters")
    return value


def hidden_password(url: str) -> str:
    """``url`` with the password of its user part shown as ``***`` (for printing settings)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


class UpstreamSettings(_Section):
    """One OpenAI-compatible backend: vLLM, Ollama, llama.cpp server, OpenAI itself."""

    base_url: str
    api_key_env: str | None = None
    connect_timeout: float = Field(3.0, gt=0)
    # streams only: time until the first event (the first token), and the longest silence
    # between two; a whole (non-streamed) answer has no first byte before it is done: only
    # total_timeout bounds it (docs/configuration.md)
    first_byte_timeout: float = Field(120.0, gt=0)
    total_timeout: float = Field(600.0, gt=0)
    max_connections: int = Field(512, ge=1)
    # the most bytes of a whole (non-streamed) answer, as received and as decoded: a backend
    # answering more is failed over (its connection closed), so one answer cannot take a
    # worker's memory. Above the largest answer OpenAI's API gives (2,048 embeddings of 3,072
    # floats as JSON, ~135 MB); streams are relayed as they come and have no such bound
    max_response_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # calls in flight to this backend at once (all its models, per replica); a full backend
    # is skipped for the next one, and 503 at_capacity when all are full
    max_concurrency: int | None = Field(None, ge=1)
    # ask streaming backends for usage (stream_options.include_usage) even when the client
    # did not, so every stream is metered; the extra usage chunk is not passed on
    inject_stream_usage: bool = True
    # which API the backend speaks for /v1/responses: "chat" (chat completions only, as most
    # self-hosted servers: Responses requests are translated, docs/api.md has the table) or
    # "responses" (OpenAI itself and servers that implement it: passed on as they are)
    api: Literal["chat", "responses"] = "chat"
    # circuit breaker per (backend, model), see gatehouse/upstream/breaker.py: connect failures
    # in a row that open it; or, over the window, min_requests verdicts with failure_ratio
    # failing, from min_callers distinct callers
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown: float = Field(30.0, gt=0)
    breaker_window: float = Field(60.0, gt=0)
    breaker_min_requests: int = Field(5, ge=1)
    breaker_failure_ratio: float = Field(0.85, gt=0, le=1)
    breaker_min_callers: int = Field(2, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    # the gateway's request id, sent upstream so both logs can be joined. OpenAI documents
    # X-Client-Request-Id (and echoes it); vLLM, Ollama and LiteLLM ignore it; llama.cpp's
    # Python server refuses any x-request-id that is not a UUID — hence not that one by
    # default. "" sends none; "uuid" sends the id as a UUID (the same id, re-encoded)
    request_id_header: str = Field("x-client-request-id", pattern=r"^[A-Za-z0-9-]*$",
                                   max_length=64)
    request_id_format: Literal["gatehouse", "uuid"] = "gatehouse"

    @field_serializer("headers")
    def _hide_headers(self, value: dict[str, str]) -> dict[str, str]:
        return dict.fromkeys(value, "(hidden)")  # may carry credentials: names only

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        parts = urlsplit(one_line_url(value))
        try:
            parts.port  # noqa: B018  (raises for a port that is not a number, or past 65535)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise ValueError("names no host")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _sendable(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            check_header(name, text)
        return value


class BackendRef(_Section):
    upstream: str
    model: str | None = None  # the name the backend knows the model by; defaults to ours
    weight: float = Field(1.0, gt=0)


class ModelSettings(_Section):
    backends: list[BackendRef] = Field(min_length=1)
    owned_by: str = "gatehouse"
    # requests of this model running at once (per replica); beyond it they queue by priority
    max_concurrency: int | None = Field(None, ge=1)
    # let the limit move between min_concurrency and max_concurrency with the backend's
    # time to first byte (docs/admission.md)
    adaptive: bool = False
    min_concurrency: int = Field(1, ge=1)
    # what counts this model's tokens when the backend reports none (and the prompt reserved):
    # o200k_base | cl100k_base | path/to/tokenizer.json | words | chars; [quota] tokenizer
    tokenizer: str | None = None

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str | None) -> str | None:
        return None if value is None else check_tokenizer(value)

    @field_validator("backends", mode="before")
    @classmethod
    def _names_as_refs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"upstream": v} if isinstance(v, str) else v for v in value]
        return value


class DemoSettings(_Section):
    """The built-in ``demo`` backend: a deterministic echo for trying the gateway, not a model."""

    enabled: bool = True
    model: str = "demo"
    latency_ms: float = Field(0.0, ge=0)
    ms_per_token: float = Field(0.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    reply_tokens: int = Field(24, ge=1, le=4096)
    max_concurrency: int | None = Field(None, ge=1)
    adaptive: bool = False
    min_concurrency: int = Field(1, ge=1)
    # the demo counts words and punctuation marks: the same count reserves its prompts
    tokenizer: str = "words"

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str) -> str:
        return check_tokenizer(value)


class StorageSettings(_Section):
    # durable store: SQLite file by default, PostgreSQL for clusters
    # (postgresql+asyncpg://user@host/db); created and migrated on start
    database_url: str = "sqlite+aiosqlite:///gatehouse.db"
    migrate_on_start: bool = True
    # hot shared state (sessions, revocations; later counters and bans): memory:// or redis://
    state_url: str = "memory://"
    # with memory:// and one worker, `serve` shares its state with the CLI on a Unix socket
    # beside the secret file (gatehouse.sock), so CLI changes reach it at once
    share_state: bool = True
    # how long the state layer remembers which backend holds a stored Responses API response,
    # and keeps translated ones (api.md, "Stored responses"); 0: neither (no follow-ups)
    responses_keep_days: float = Field(30.0, ge=0, le=365)

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("state_url")
    @classmethod
    def _known_state(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "unix://")):
            raise ValueError("must be memory:// or a redis:// URL")
        return value

    @field_serializer("database_url", "state_url")
    def _hide_passwords(self, value: str) -> str:
        return hidden_password(value)  # `gatehouse check` prints settings


class SignInSettings(_Section):
    """``[identity.sign_in]``: failed sign-ins slow down, per account and per address (see
    docs/web.md, "Too many failed sign-ins")."""

    enabled: bool = True
    account_free_failures: int = Field(5, ge=1)   # failures for one email before a lock
    address_free_failures: int = Field(20, ge=1)  # from one address (IPv6: its /64) — NATs
    first_lock_seconds: float = Field(5.0, gt=0)   # then 10, 20, 40 … (doubling)
    max_lock_seconds: float = Field(900.0, gt=0)
    memory_seconds: float = Field(86400.0, gt=0)   # failures forgotten after this long quiet

    @model_validator(mode="after")
    def _order(self) -> SignInSettings:
        if not self.first_lock_seconds <= self.max_lock_seconds <= self.memory_seconds:
            raise ValueError("needs first_lock_seconds <= max_lock_seconds <= memory_seconds")
        return self


class IdentitySettings(_Section):
    # false: requests without a gatehouse key are served as the anonymous tier (a trusted LAN);
    # gatehouse keys that are presented are still checked
    require_key: bool = True
    anonymous_tier: str = "free"
    # server secret keying the stored key hashes; or a file holding it (made when missing only
    # for a store without API keys: docs/identity.md#the-server-secret)
    secret: str | None = Field(None, min_length=32, repr=False)
    secret_file: str = "gatehouse.secret"
    key_cache_ttl: float = Field(10.0, gt=0, le=3600)
    key_cache_size: int = Field(100_000, ge=16)
    # while the store cannot be reached, keys verified within this many seconds keep working
    # from the cache (0: none do; the store being down is then an API outage)
    key_stale_ttl: float = Field(3600.0, ge=0, le=7 * 86400)
    negative_cache_ttl: float = Field(60.0, gt=0)
    negative_cache_size: int = Field(100_000, ge=16)
    session_cookie: str = "gatehouse_session"
    session_idle_minutes: float = Field(30.0, gt=0)
    session_absolute_hours: float = Field(24.0, gt=0)
    # "auto": Secure when the request came over https; true/false force it
    cookie_secure: bool | str = "auto"
    sign_in: SignInSettings = SignInSettings()

    @field_serializer("secret")
    def _hide_secret(self, value: str | None) -> str | None:
        return None if value is None else "(hidden)"  # `gatehouse check` prints settings

    @field_validator("cookie_secure")
    @classmethod
    def _auto(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and value != "auto":
            raise ValueError('must be true, false or "auto"')
        return value


class LimitSettings(_Section):
    """Limits for one scope; unset means unlimited. Minute and hour limits answer 429
    ``rate_limit_exceeded``; day and month limits are budgets (429 ``insufficient_quota``)."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    response_tokens_per_hour: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    tokens_per_month: int | None = Field(None, ge=1)
    concurrent_requests: int | None = Field(None, ge=1)

    def any(self) -> bool:
        return any(v is not None for v in self.model_dump().values())


class TierSettings(_Section):
    kind: str = Field("api", pattern="^(api|web)$")
    description: str = ""
    # other tiers a request in this tier may ask for with `service_tier`
    may_request: list[str] = Field(default_factory=list)
    # per key (API tiers) or per user (web tiers); and for the whole project / org
    limits: LimitSettings = LimitSettings()
    project_limits: LimitSettings = LimitSettings()
    org_limits: LimitSettings = LimitSettings()
    # overrides [quota] on_limiter_error for this tier
    on_limiter_error: str | None = Field(None, pattern="^(fail_open|fail_closed)$")
    # admission class at capacity: high is served first and may use the reserved share
    priority: str = Field("normal", pattern="^(high|normal|low)$")
    # the models this tier may use; empty: every model (the web chat's picker shows these)
    models: list[str] = Field(default_factory=list)


class QuotaSettings(_Section):
    enabled: bool = True
    # per client network (IPv4 /network_prefix_v4, IPv6 /network_prefix_v6), whoever asks
    network_limits: LimitSettings = LimitSettings()
    network_prefix_v4: int = Field(32, ge=8, le=32)
    network_prefix_v6: int = Field(64, ge=16, le=128)
    # when the shared limiter (Redis) cannot be reached: fail_open = a local limiter sized to
    # this replica's share (1/replicas); fail_closed = 503 quota_unavailable
    on_limiter_error: str = Field("fail_open", pattern="^(fail_open|fail_closed)$")
    replicas: int = Field(1, ge=1)
    # reserved for a request that names no max_tokens / max_completion_tokens
    default_completion_tokens: int = Field(512, ge=1)
    # a reservation lapses after this long if never settled (a replica died mid-request)
    reservation_ttl: float = Field(900.0, ge=1)
    # seconds a call to the shared limiter (Redis) may take before that Redis counts as
    # unreachable (then on_limiter_error applies); also the wait for a free connection
    limiter_timeout: float = Field(2.0, gt=0, le=60)
    # the tokenizer of models that name none ([models.X] tokenizer)
    tokenizer: str = "o200k_base"

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str) -> str:
        return check_tokenizer(value)


def default_tiers() -> dict[str, TierSettings]:
    return {
        "free": TierSettings(kind="web", description="Web users without a plan",
                             priority="low"),
        "plus": TierSettings(kind="web", description="Web users on Plus"),
        "pro": TierSettings(kind="web", description="Web users on Pro", priority="high"),
        "standard": TierSettings(kind="api", description="API default",
                                 may_request=["flex"]),
        "priority": TierSettings(kind="api", description="API, served first at capacity",
                                 may_request=["standard", "flex"], priority="high"),
        "flex": TierSettings(kind="api", description="API, cheapest; shed first at capacity",
                             priority="low"),
    }


class ClassSettings(_Section):
    queue_timeout: float = Field(gt=0, le=600)  # longest wait for a slot before 503
    max_queue: int = Field(ge=0)                 # waiting requests beyond this get 503 at once


def default_classes() -> dict[str, ClassSettings]:
    return {"high": ClassSettings(queue_timeout=30, max_queue=1000),
            "normal": ClassSettings(queue_timeout=5, max_queue=500),
            "low": ClassSettings(queue_timeout=1, max_queue=100)}


class AdmissionSettings(_Section):
    enabled: bool = True
    # share of each model's capacity that only the high class may use
    reserved_share: float = Field(0.2, ge=0, lt=1)
    classes: dict[str, ClassSettings] = Field(default_factory=default_classes)

    @field_validator("classes", mode="before")
    @classmethod
    def _all_classes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            merged = {k: v.model_dump() for k, v in default_classes().items()}
            for name, table in value.items():
                if name not in merged:
                    raise ValueError(f"unknown class {name!r} (high, normal, low)")
                merged[name] = {**merged[name], **table}
            return merged
        return value


@dataclass(config=ConfigDict(extra="forbid"), slots=True)
class EdgeRuleSettings:
    """One firewall rule: an action and one or more conditions (all must hold). A slotted
    dataclass, not a model: as models (each with its own ``__dict__`` and set of the fields
    given) 10,000 rules held 5.8 MB in every worker, as this 1.1 MB."""

    action: Action
    name: str | None = Field(default=None, max_length=64)  # for metrics, logs and Ray IDs
    cidr: str | list[str] | None = None
    # a file of CIDRs, one a line (# comments); "list" in TOML (a builtin's name in Python)
    list_file: str | None = Field(default=None, alias="list")
    user_agent: str | None = None    # regex, searched in User-Agent
    path: str | None = None          # regex, searched in the path
    country: str | list[str] | None = None   # ISO codes; needs [edge] geo_database
    asn: int | list[int] | None = None       # needs [edge] asn_database (or geo_database)
    # challenge only: leading zero bits
    difficulty: int | None = Field(default=None, ge=DIFFICULTY[0], le=DIFFICULTY[1])

    def written(self) -> dict[str, Any]:
        """The rule as written: its keys (``list``, not ``list_file``), those not given left
        out."""
        return {("list" if f.name == "list_file" else f.name): value
                for f in dataclasses.fields(self) if (value := getattr(self, f.name)) is not None}

    @model_validator(mode="after")
    def _usable(self) -> EdgeRuleSettings:
        parse_rule(self.written(), "check")
        return self


class DetectorSettings(_Section):
    """Automatic timed bans. Counting is per replica (see docs/edge.md)."""

    enabled: bool = True
    window_seconds: float = Field(10.0, gt=0, le=3600)
    max_requests_per_address: int = Field(1000, ge=1)
    max_requests_per_network: int = Field(5000, ge=1)
    max_unauthorized: int = Field(50, ge=1)       # 401 answers to one address
    max_challenge_failures: int = Field(20, ge=1)
    # connections cut for a head or body that did not arrive in time ([server] head_timeout,
    # body_timeout); connections that never sent a byte are not counted (browsers preconnect)
    max_slow_clients: int = Field(20, ge=1)
    max_signin_failures: int = Field(10, ge=1)    # failed or throttled sign-ins, one address
    ban_seconds: float = Field(60.0, gt=0)
    max_ban_seconds: float = Field(86400.0, gt=0)
    # a subject banned again within this long gets twice the previous ban
    repeat_memory_seconds: float = Field(86400.0, gt=0)


class EdgeSettings(_Section):
    # proxies whose X-Forwarded-For / Forwarded is believed (CIDRs); nobody else's is
    trusted_proxies: list[str] = Field(default_factory=list)
    forwarded_header: str = Field("x-forwarded-for", pattern="^(x-forwarded-for|forwarded)$")
    network_prefix_v4: int = Field(24, ge=8, le=32)
    network_prefix_v6: int = Field(64, ge=16, le=128)
    geo_database: str | None = None   # MaxMind-format .mmdb with country (GeoLite2-Country)
    asn_database: str | None = None   # MaxMind-format .mmdb with ASNs (GeoLite2-ASN)
    lists_check_seconds: float = Field(2.0, gt=0)   # how often list files' mtimes are looked at
    rules_reload_seconds: float = Field(30.0, gt=0)  # store rules, besides the broadcast
    # the human check (docs/edge.md "Human check"): bits of work by default, how long a page's
    # puzzle stays solvable, how long a passed check lasts (the clearance cookie's life)
    challenge_difficulty: int = Field(16, ge=1, le=32)
    challenge_ttl: float = Field(300.0, ge=5, le=86400)
    clearance_ttl: float = Field(1800.0, ge=1, le=30 * 86400)
    rays_keep_days: float = Field(30.0, gt=0)
    rays_buffer: int = Field(10_000, ge=100)
    # Ray events stored per address per 10 s (per replica); the rest are only counted
    rays_per_address: int = Field(20, ge=1)
    detector: DetectorSettings = DetectorSettings()
    rules: list[EdgeRuleSettings] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or CIDR") from None
        return value


class WebSettings(_Section):
    """The web chat (``/``): docs/web.md."""

    chat: bool = True
    max_message_chars: int = Field(32_000, ge=1, le=1_000_000)
    # a conversation whose messages add up to more is "too long for the model": start a new one
    max_conversation_chars: int = Field(400_000, ge=1, le=10_000_000)
    max_answer_tokens: int | None = Field(None, ge=1)  # sent as max_tokens; None: the model's
    # a message still marked "streaming" that has not been saved for this long is shown as
    # incomplete (its replica went away mid-answer)
    stale_seconds: float = Field(30.0, gt=0, le=3600)
    # self sign-up at /signup (docs/web.md "Signing up"); off: /signup is a 404, no link shown
    signup: bool = False
    signup_tier: str = "free"  # a web tier; checked when the settings are loaded
    signup_org: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")  # an org name

class StatusComponentSettings(_Section):
    """``[status.components.NAME]``: one component of the status page and the traffic it is
    judged on (docs/status.md). Unset traffic fields match everything."""

    name: str | None = Field(None, max_length=100)  # shown; default: the key
    description: str | None = Field(None, max_length=500)
    group: str | None = Field(None, max_length=100)  # a group's name (made as needed)
    # which rollup cells count: the record's component (api, web, login, admin), the model
    component: str | None = Field(None, pattern="^(api|web|login|admin)$")
    model: str | None = Field(None, max_length=128)
    # objectives: share of requests answered without a fault of the service, and share of
    # answers whose first byte came within latency_ms
    availability: float = Field(0.995, gt=0.5, lt=1)
    latency_ms: float = Field(30_000.0, gt=0)
    latency_objective: float = Field(0.99, gt=0.5, lt=1)
    shown: bool = True
    only_show_if_degraded: bool = False
    position: int | None = Field(None, ge=0)


class StatusSettings(_Section):
    """``[status]``: the public status page and its detector (docs/status.md). The defaults
    are the real numbers; tests shrink the tick and the windows."""

    enabled: bool = True
    page_name: str = Field("gatehouse", min_length=1, max_length=100)
    url: str = ""  # the page's public address (for links); default: the request's host
    # the detector: how often it looks, and its two burn-rate rules (minutes, multiple of budget)
    tick_seconds: float = Field(10.0, gt=0, le=600)
    now_minutes: int = Field(2, ge=1, le=60)
    now_burn: float = Field(10.0, gt=1)
    fast_long_minutes: int = Field(60, ge=1, le=360)
    fast_short_minutes: int = Field(5, ge=1, le=360)
    fast_burn: float = Field(14.4, gt=1)
    slow_long_minutes: int = Field(360, ge=1, le=360)
    slow_short_minutes: int = Field(30, ge=1, le=360)
    slow_burn: float = Field(6.0, gt=1)
    min_requests: int = Field(20, ge=1)   # in a short window, for a rule to fire at all
    min_faults: int = Field(5, ge=1)
    partial_outage_rate: float = Field(0.10, gt=0, le=1)  # short-window error rate bands
    major_outage_rate: float = Field(0.50, gt=0, le=1)
    open_after_seconds: float = Field(15.0, ge=0, le=3600)
    resolve_after_seconds: float = Field(180.0, ge=0, le=86400)
    # how often each worker rebuilds the page and the JSON from the store
    snapshot_seconds: float = Field(5.0, gt=0, le=300)
    max_age_seconds: int = Field(5, ge=0, le=3600)  # Cache-Control of the public answers
    history_days: int = Field(90, ge=1, le=90)
    components: dict[str, StatusComponentSettings] = Field(default_factory=dict)
    # incident changes POSTed as JSON signed with HMAC-SHA256 (the secret from this
    # environment variable), and as Slack-compatible {"text": …} bodies
    webhook_urls: list[str] = Field(default_factory=list, max_length=20)
    slack_webhook_urls: list[str] = Field(default_factory=list, max_length=20)
    webhook_secret_env: str | None = None

    @field_validator("webhook_urls", "slack_webhook_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
            try:
                one_line_url(url)
            except ValueError as exc:
                raise ValueError(f"{url!r} {exc}") from None
        return value

    @model_validator(mode="after")
    def _bands(self) -> StatusSettings:
        if self.webhook_urls and not self.webhook_secret_env:
            raise ValueError("webhook_urls needs webhook_secret_env (the signing secret)")
        if self.partial_outage_rate > self.major_outage_rate:
            raise ValueError("needs partial_outage_rate <= major_outage_rate")
        for name in self.components:
            if not name or len(name) > 64 or not name.replace("-", "").replace(
                    "_", "").replace(".", "").isalnum():
                raise ValueError(f"components.{name}: names are letters, digits, - _ .")
        return self


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    identity: IdentitySettings = IdentitySettings()
    tiers: dict[str, TierSettings] = Field(default_factory=default_tiers)
    quota: QuotaSettings = QuotaSettings()
    admission: AdmissionSettings = AdmissionSettings()
    edge: EdgeSettings = EdgeSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    limits: RequestLimits = RequestLimits()
    web: WebSettings = WebSettings()
    demo: DemoSettings = DemoSettings()
    status: StatusSettings = StatusSettings()
    upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    source: str = Field("defaults", exclude=True)
    # relative paths (the SQLite file, the secret file) are taken from here
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def tier_problem(self, tier: str, kind: str) -> str | None:
        """Why ``tier`` cannot be given where a ``kind`` ("api" or "web") tier is needed —
        orgs and keys take api tiers, users web tiers — or None when it can."""
        found = self.tiers.get(tier)
        if found is None:
            known = ", ".join(name for name, t in self.tiers.items() if t.kind == kind)
            return f"no tier named {tier!r}; the {kind} tiers are: {known}"
        if found.kind != kind:
            article = "an" if kind == "api" else "a"
            return f"tier {tier!r} is a {found.kind} tier; this needs {article} {kind} tier"
        return None

    @field_validator("tiers", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # [tiers.NAME] tables add to (or replace) the built-in tiers rather than drop them
        if isinstance(value, dict):
            merged: dict[str, Any] = {k: v.model_dump(exclude_defaults=True)
                                      for k, v in default_tiers().items()}
            for name, table in value.items():
                base = merged.get(name, {})
                merged[name] = {**base, **table} if isinstance(table, dict) else table
            return merged
        return value

    @model_validator(mode="after")
    def _refs_exist(self) -> Settings:
        for name, tier in self.tiers.items():
            for other in tier.may_request:
                if other not in self.tiers:
                    raise ValueError(f"tiers.{name}.may_request: no tier named {other!r}")
        if self.identity.anonymous_tier not in self.tiers:
            raise ValueError(f"identity.anonymous_tier: no tier named "
                             f"{self.identity.anonymous_tier!r}")
        for name, model in self.models.items():
            for i, ref in enumerate(model.backends):
                if ref.upstream not in self.upstreams:
                    known = ", ".join(sorted(self.upstreams)) or "none defined"
                    raise ValueError(
                        f"models.{name}.backends.{i}.upstream: no [upstreams.{ref.upstream}]"
                        f" (known: {known})"
                    )
        signup_problem = self.tier_problem(self.web.signup_tier, "web")
        if self.web.signup and signup_problem:
            raise ValueError(f"web.signup_tier: {signup_problem}")
        served = set(self.models) | ({self.demo.model} if self.demo.enabled else set())
        for name, tier in self.tiers.items():
            for model_name in tier.models:
                if model_name not in served:
                    raise ValueError(f"tiers.{name}.models: no model named {model_name!r}")
        if self.demo.enabled and self.demo.model in self.models:
            raise ValueError(
                f"models.{self.demo.model}: clashes with the built-in demo model;"
                " rename it or set [demo] enabled = false"
            )
        return self


def _too_deep(value: Any, path: list[str]) -> str | None:
    """The key (its first levels) where ``value``, found at ``path``, goes deeper than
    MAX_DEPTH levels; None when it does not. Walked with a list, not recursion."""
    todo: list[tuple[Any, list[str]]] = [(value, path)]
    while todo:
        node, where = todo.pop()
        if len(where) > MAX_DEPTH:
            shown = ".".join(where[:4])
            return shown + ".…" if len(where) > 4 else shown
        if isinstance(node, dict):
            todo.extend((v, [*where, str(k)]) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((v, [*where, str(i)]) for i, v in enumerate(node))
    return None


def _shallow(value: Any, source: str, path: list[str]) -> Any:
    """``value`` (found at ``path``) when it is at most MAX_DEPTH levels deep in all, else
    ConfigError naming ``source`` and where."""
    where = _too_deep(value, path)
    if where is not None:
        raise ConfigError(source, where, TOO_DEEP)
    return value


def _parse_toml(text: str, source: str, key: str = "") -> dict[str, Any]:
    """tomllib's reading, with a value nested too deep for its recursion a ConfigError
    (TOMLDecodeError is the caller's)."""
    try:
        return tomllib.loads(text)
    except RecursionError:  # tomllib reads arrays and inline tables recursively
        line = _deep_line(text)
        where = f" (line {line})" if line and not key else ""
        raise ConfigError(source, key, f"a value{where} is {TOO_DEEP}") from None


def _deep_line(text: str) -> int | None:
    """The line where brackets and braces open past MAX_DEPTH — a rough reading (quotes
    toggle, ``#`` ends a line outside them) to say where tomllib gave up."""
    depth, quote = 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        escaped = False
        for char in line:
            if quote:
                if char == quote and not escaped:
                    quote = ""
                escaped = not escaped and char == "\\" and quote == '"'
            elif char in "\"'":
                quote = char
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    return number
            elif char in "]}":
                depth = max(0, depth - 1)
    return None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if len(path) > MAX_DEPTH:
            raise ConfigError(name[:60] + "…", "", TOO_DEEP)
        try:
            value: Any = _shallow(_parse_toml(f"v = {raw}", name, ".".join(path))["v"],
                                  name, path)
        except tomllib.TOMLDecodeError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(name, "", "conflicts with another GATEHOUSE_ variable")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _problem(error: Any) -> tuple[str, str]:
    """One pydantic error as (dotted key, a reason a person can act on)."""
    key = ".".join(str(p) for p in error["loc"])
    reason = str(error["msg"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # model, dataclass
        reason = "unknown key (check the spelling against docs/configuration.md)"
    elif error["type"] == "missing":
        reason = "required key is missing"
    elif error["type"] == "dataclass_type":  # (a rule): worded as a model's, as before
        reason = f"Input should be a valid dictionary or instance of {error['ctx']['class_name']}"
    return key, reason.removeprefix("Value error, ")


def load_settings(path: str | os.PathLike[str] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (or ``$GATEHOUSE_CONFIG``, or ``./gatehouse.toml`` if it exists)."""
    env = dict(os.environ if environ is None else environ)
    explicit = path or env.get(ENV_PREFIX + "CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_PATH)
    data: dict[str, Any] = {}
    source = "defaults"
    if explicit or file.exists():
        source = str(file)
        try:
            data = _shallow(_parse_toml(file.read_text(encoding="utf-8"), source), source, [])
        except FileNotFoundError:
            raise ConfigError(source, "", "file not found") from None
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start}); TOML files "
                                          "are UTF-8") from None
        except ValueError:  # a NUL in the path (GATEHOUSE_CONFIG): no file has that name
            raise ConfigError(source.replace("\0", "\\0"), "", "file not found") from None
    overrides = _env_overrides(env)
    if overrides:
        source += " + GATEHOUSE_* environment"
    try:
        settings = Settings.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ConfigError(source, *problems[0], more=problems[1:]) from None
    settings.source = source
    if explicit or file.exists():
        settings.base_dir = file.resolve().parent
    return settings

