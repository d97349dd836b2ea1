"""Builds the gateway from settings: the stages in order, and the routes that use them.

The stage lists below are the pipeline of DESIGN.md. Later stages (edge, identity, quota,
admission) slot into ``api_stages`` / ``proxy_stages`` without changing anything else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gatehouse.admin import LazyAdmin
from gatehouse.admission.stage import AdmissionStage
from gatehouse.config import ConfigError, Settings, load_settings
from gatehouse.context import RequestContext
from gatehouse.edge.bans import Bans
from gatehouse.edge.challenge import PREFIX as CHALLENGE_PREFIX
from gatehouse.edge.challenge import Challenge
from gatehouse.edge.checkpoint import Checkpoint, build_challenge_app
from gatehouse.edge.connections import Connections
from gatehouse.edge.detector import Detector
from gatehouse.edge.geo import Geo
from gatehouse.edge.guard import EdgeGuard
from gatehouse.edge.rays import RayLog
from gatehouse.edge.rulebook import RuleBook
from gatehouse.edge.screen import Edge
from gatehouse.edge.stage import AnonymousCheckStage, EdgeStage
from gatehouse.identity.principal import Principal
from gatehouse.identity.service import IdentityService, resolve_paths
from gatehouse.identity.stage import IdentityStage, ServiceTierStage
from gatehouse.models_list import ModelsStage
from gatehouse.pipeline import Pipeline, Stage
from gatehouse.probes import Probes
from gatehouse.quota.limiter import Limiter
from gatehouse.quota.memory import MemoryLimiter
from gatehouse.quota.overrides import Overrides
from gatehouse.quota.stage import QuotaStage
from gatehouse.quota.tokenizer import Tokenizers
from gatehouse.quota.usage import UsageStage
from gatehouse.schema.stage import SchemaStage
from gatehouse.server import Gateway, Route
from gatehouse.state.local import StateServer, socket_path
from gatehouse.state.memory import MemoryState
from gatehouse.status.public import handlers as status_handlers
from gatehouse.status.service import StatusService
from gatehouse.store.conversations import Conversations
from gatehouse.store.db import Store
from gatehouse.store.edge import EdgeRecords
from gatehouse.store.requests import RequestRows
from gatehouse.store.rollups import RollupRows
from gatehouse.store.usage import UsageBook
from gatehouse.telemetry.compaction import Compactor, retention
from gatehouse.telemetry.health_stage import PATH as HEALTH_PATH
from gatehouse.telemetry.health_stage import HealthStage
from gatehouse.telemetry.lookup import PREFIX as LOOKUP_PREFIX
from gatehouse.telemetry.lookup import RequestLookupStage
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.mounted import Recorded
from gatehouse.telemetry.record import AccessLog
from gatehouse.telemetry.requestlog import RequestLog
from gatehouse.telemetry.rollups import Rollups
from gatehouse.telemetry.stage import TelemetryStage
from gatehouse.telemetry.tracing import Tracing
from gatehouse.telemetry.usage_api import PATH as USAGE_API_PATH
from gatehouse.telemetry.usage_api import CompletionsUsageStage
from gatehouse.upstream.affinity import PREFIX as STORED_PREFIX
from gatehouse.upstream.affinity import (
    Affinity,
    FollowUpStage,
    StoredResponseStage,
    stored_methods,
)
from gatehouse.upstream.backend import Backend, HTTPBackend
from gatehouse.upstream.breaker import BreakerPolicy, CircuitBreaker
from gatehouse.upstream.demo import DemoBackend
from gatehouse.upstream.router import ModelRoute, Router, Target
from gatehouse.upstream.slots import BackendSlots
from gatehouse.upstream.stage import UpstreamStage
from gatehouse.web import build_web_app
from gatehouse.web.chat import ChatApp
from gatehouse.web.chatstage import PATH as CHAT_PATH
from gatehouse.web.chatstage import ChatPipeline, ChatStage
from gatehouse.web.generation import Generations
from gatehouse.web.limits import exhausted_until, limits_of
from gatehouse.web.signup import PATH as SIGNUP_PATH


def _breaker_gauge(metrics: Metrics, backend: str, model: str) -> Callable[[str], None]:
    gauge = metrics.breaker_open.labels(backend, model)
    gauge.set(0)

    def on_change(state: str) -> None:
        gauge.set(state != "closed")

    return on_change


def build_router(settings: Settings, metrics: Metrics,
                 environ: dict[str, str] | None = None) -> tuple[Router, list[Backend]]:
    env = os.environ if environ is None else environ
    backends: dict[str, tuple[Backend, BreakerPolicy, bool, str]] = {}
    slots: dict[str, BackendSlots] = {}
    for name, up in settings.upstreams.items():
        key = None
        if up.api_key_env:
            key = env.get(up.api_key_env)
            if not key:
                raise ConfigError(settings.source, f"upstreams.{name}.api_key_env",
                                  f"environment variable {up.api_key_env} is not set")
        backends[name] = (HTTPBackend(name, up, key), BreakerPolicy.of(up),
                          up.inject_stream_usage, up.api)
        if up.max_concurrency is not None:
            slots[name] = BackendSlots(up.max_concurrency)
    created = int(time.time())
    routes: dict[str, ModelRoute] = {}
    # one breaker per (backend, the model's name there): models that share one share it
    breakers: dict[tuple[str, str], CircuitBreaker] = {}
    for model, ms in settings.models.items():
        targets = []
        for ref in ms.backends:
            backend, policy, inject, api = backends[ref.upstream]
            served = ref.model or model
            breaker = breakers.get((ref.upstream, served))
            if breaker is None:
                breaker = breakers[ref.upstream, served] = CircuitBreaker(
                    policy, on_change=_breaker_gauge(metrics, ref.upstream, served))
            targets.append(Target(backend, breaker, served, ref.weight, inject,
                                  slots.get(ref.upstream), api))
        routes[model] = ModelRoute(model, targets, ms.owned_by, created)
    everything: list[Backend] = [b for b, _, _, _ in backends.values()]
    if settings.demo.enabled:
        demo = DemoBackend(settings.demo)
        routes[settings.demo.model] = ModelRoute(
            # no circuit breaker for the demo: its failure_rate should stay a rate
            settings.demo.model,
            # it speaks chat completions: Responses requests go through the gateway's bridge,
            # which keeps the responses (follow-ups, GET, DELETE, input items) as for any
            # chat-only backend
            [Target(demo, CircuitBreaker(BreakerPolicy.never()), settings.demo.model, 1.0)],
            "gatehouse-demo", created)
        everything.append(demo)
    return Router(routes), everything


def open_geo(settings: Settings) -> Geo | None:
    """The edge's country / ASN databases, open; None when none is configured. ConfigError
    when one cannot be opened or is not a MaxMind-format database."""
    es = settings.edge
    if not (es.geo_database or es.asn_database):
        return None
    paths = [str(settings.base_dir / p) if p else None
             for p in (es.geo_database, es.asn_database)]
    try:
        return Geo(paths[0], paths[1])
    except (OSError, ValueError, RuntimeError) as exc:  # maxminddb: InvalidDatabaseError
        key = "edge.geo_database" if es.geo_database else "edge.asn_database"
        raise ConfigError(settings.source, key, f"cannot open the database: {exc}") from None


def check_edge_files(settings: Settings) -> None:
    """What the edge reads from disk at start, read now: the geo databases and the list
    files ``[[edge.rules]]`` name. ConfigError naming the file that cannot be used."""
    geo = open_geo(settings)
    if geo is not None:
        geo.close()
    try:
        RuleBook(settings.edge, settings.base_dir, None).read_config_lists()
    except ConfigError as exc:
        raise ConfigError(settings.source, exc.key, exc.reason) from None


def build_edge(settings: Settings, identity: IdentityService, metrics: Metrics,
               challenger: Challenge | None = None) -> Edge:
    es = settings.edge
    records = EdgeRecords(identity.store)
    geo = open_geo(settings)
    try:
        rules = RuleBook(es, settings.base_dir, records, on_compile=metrics.edge_rules.set)
    except ConfigError as exc:
        raise ConfigError(settings.source, exc.key, exc.reason) from None
    bans = Bans(identity.state, es.detector)
    return Edge(es, rules, bans, Detector(es.detector, bans, metrics),
                RayLog(records, size=es.rays_buffer, keep_days=es.rays_keep_days,
                       per_address=es.rays_per_address, on_drop=metrics.edge_rays_dropped.inc),
                metrics, challenger=challenger, geo=geo)


def build_tracing(settings: Settings, metrics: Metrics) -> Tracing | None:
    """OTLP export when ``[telemetry] otlp_endpoint`` is set: only then is the SDK imported."""
    if settings.telemetry.otlp_endpoint is None:
        return None
    try:
        from gatehouse.telemetry.otlp import OTLPExport
    except ImportError as exc:
        raise ConfigError(settings.source, "telemetry.otlp_endpoint",
                          f"OTLP export needs the OpenTelemetry SDK ({exc.name} is missing): "
                          "pip install 'gatehouse-llm[otlp]'") from None
    return OTLPExport(settings.telemetry, metrics, settings.upstreams)


def build_telemetry(settings: Settings, metrics: Metrics, store: Store,
                    tracing: Tracing | None = None
                    ) -> tuple[TelemetryStage, list[RequestLog | Rollups | Compactor]]:
    """The telemetry stage, and its background writers in start order (closed in reverse,
    before the store)."""
    ts = settings.telemetry
    request_log = RequestLog(
        RequestRows(store), metrics, size=ts.request_log_buffer,
        keep_days=ts.request_log_days, sample_above=ts.request_log_sample_above,
    ) if ts.request_log else None
    rollups = Rollups(RollupRows(store),
                      on_drop=metrics.rollups_dropped.inc) if ts.rollups else None
    compactor = Compactor(RollupRows(store), retention(ts)) if ts.rollups else None
    telemetry = TelemetryStage(metrics, AccessLog(ts.access_log), request_log, rollups,
                               tracing)
    return telemetry, [w for w in (request_log, rollups, compactor) if w is not None]


def open_limiter(url: str, timeout: float = 2.0) -> Limiter:
    if url.startswith("memory://"):
        return MemoryLimiter()
    from gatehouse.quota.redis import RedisLimiter

    return RedisLimiter(url, socket_timeout=timeout)


def create_app(settings: Settings | None = None, *, clock: Callable[[], float] = time.time,
               identity: IdentityService | None = None, share_state: bool = False) -> Gateway:
    """The gateway. ``share_state`` (``gatehouse serve`` with one worker on ``memory://``)
    serves the in-process state to the CLI (gatehouse/state/local.py)."""
    settings = settings or load_settings()
    metrics = Metrics()
    router, backends = build_router(settings, metrics)
    identity = identity or IdentityService(settings, clock=clock)
    identity.store.on_query = metrics.store_queries.inc

    tracing = build_tracing(settings, metrics)
    telemetry, writers = build_telemetry(settings, metrics, identity.store, tracing)
    request_log = telemetry.request_log
    human_check = Challenge(identity.keys.derive, identity.state, metrics,
                            challenge_ttl=settings.edge.challenge_ttl,
                            clearance_ttl=settings.edge.clearance_ttl,
                            cookie_secure=settings.identity.cookie_secure)
    edge = build_edge(settings, identity, metrics, human_check)
    human_check.offenses = edge  # failed checks feed the abuse detector
    screen = EdgeStage(edge)
    who = IdentityStage(identity.verifier, identity.sessions, identity.accounts,
                        settings.identity, metrics)
    # anonymous callers (open mode) meet challenge rules after identity; verified keys do not
    api_stages: list[Stage] = [telemetry, screen, who, AnonymousCheckStage(edge)]
    book = UsageBook(identity.store)
    overrides = Overrides(identity.store)
    tokenizers = Tokenizers(
        {**{name: m.tokenizer or settings.quota.tokenizer for name, m in settings.models.items()},
         settings.demo.model: settings.demo.tokenizer}, settings.quota.tokenizer)
    quota = QuotaStage(open_limiter(settings.storage.state_url, settings.quota.limiter_timeout),
                       settings, metrics, clock,
                       book=book, overrides=overrides, tokenizers=tokenizers)
    # which backend stores which response (and the responses kept for chat-only backends)
    keep = settings.storage.responses_keep_days * 86400
    affinity = Affinity(identity.state, keep) if keep else None

    async def start_quota() -> None:
        await quota.start()
        await book.start()
        await overrides.start(identity.state)

    proxy_stages: list[Stage] = [
        *api_stages,
        SchemaStage(settings.server.max_body_bytes, router.exists, settings.limits),
        ServiceTierStage(settings.tiers),
        # a follow-up's kept conversation, found before the quota stage reserves for it
        *([FollowUpStage(affinity, router)] if affinity else []),
        quota,
        AdmissionStage(settings, metrics),
        UpstreamStage(router, metrics, tokenizers, tracing, affinity),
    ]
    proxy = Pipeline(proxy_stages)
    # GET/DELETE /v1/responses/{id}, …/input_items: to the backend holding it, counted as
    # requests (no tokens) by the same quota, admission and upstream stages
    stored = Pipeline([*api_stages, StoredResponseStage(affinity, router),
                       *proxy_stages[proxy_stages.index(quota):]]) if affinity else None
    probes = Probes(router, backends, {
        "store": ("sqlite" if identity.store.is_sqlite else "postgresql", identity.store.ping),
        "state": (identity.state.name, identity.state.ping)})
    routes: dict[str, Route] = {
        "/v1/chat/completions": Route("POST", proxy, "chat.completions"),
        "/v1/completions": Route("POST", proxy, "completions"),
        "/v1/embeddings": Route("POST", proxy, "embeddings"),
        "/v1/responses": Route("POST", proxy, "responses"),
        # passed on to the model's backends with keys, request quotas, admission and ids
        "/v1/moderations": Route("POST", proxy, "moderations"),
        "/v1/images/generations": Route("POST", proxy, "images.generations"),
        "/v1/audio/speech": Route("POST", proxy, "audio.speech"),
        "/v1/audio/transcriptions": Route("POST", proxy, "audio.transcriptions"),
        "/v1/audio/translations": Route("POST", proxy, "audio.translations"),
        "/v1/usage": Route("GET", Pipeline([*api_stages, UsageStage(quota)]), "usage"),
        "/v1/models": Route("GET", Pipeline([*api_stages, ModelsStage(router)]), "models"),
        HEALTH_PATH: Route("GET", Pipeline([*api_stages, HealthStage(
            identity.store, retention(settings.telemetry))]), "health"),
        USAGE_API_PATH: Route("GET", Pipeline([*api_stages, CompletionsUsageStage(
            identity.store, retention(settings.telemetry))]), "usage.completions"),
    }
    prefix_routes = {"/v1/models/": Route("GET", Pipeline([*api_stages, ModelsStage(router)]),
                                          "models"),
                     **({STORED_PREFIX: Route("GET", stored, "responses.stored",
                                              methods=stored_methods)} if stored else {})}
    if request_log is not None:
        prefix_routes[LOOKUP_PREFIX] = Route(
            "GET", Pipeline([*api_stages, RequestLookupStage(request_log)]), "requests")
    # the web chat: POST /chat/send is the proxy pipeline with the chat stage after identity
    chat = None
    web_mounts: dict[str, str] = {}
    first_stops: list[Callable[[], Awaitable[None]]] = []
    chat_starts: list[Callable[[], Awaitable[None]]] = []
    if settings.web.chat:
        conversations = Conversations(identity.store)
        generations = Generations(identity.state)  # a stop reaches the replica generating
        usage = UsageStage(quota)

        async def limits(principal: Principal) -> list[dict[str, Any]]:
            return await limits_of(usage, principal)

        async def resets(ctx: RequestContext) -> float | None:
            return exhausted_until(await limits(ctx.principal)) if ctx.principal else None

        def served() -> list[str]:
            return list(router.routes)

        chat_stage = ChatStage(settings, conversations, served, generations)
        routes[CHAT_PATH] = Route("POST", ChatPipeline(
            [*api_stages, chat_stage, *proxy_stages[len(api_stages):]], conversations,
            generations, resets), "chat.completions")
        chat = ChatApp(identity, settings, conversations, generations, served, limits)
        first_stops.append(generations.aclose)  # answers end (saved) before the store closes
        chat_starts.append(generations.start)
        web_mounts = {"/chat/": "web", "/c/": "web", "/": "web"}
    status = StatusService(settings, identity.store, clock)
    guarded_web = EdgeGuard(build_web_app(identity, offenses=edge, chat=chat), edge)
    login = Recorded(guarded_web, telemetry, "login")
    connections = Connections(settings.server, metrics, is_proxy=edge.is_proxy,
                              on_slow=edge.slow_client, max_body=max(
                                  settings.server.max_body_bytes,
                                  settings.limits.max_audio_bytes))
    connections.on_answer = telemetry.connection_answer
    starts: list[Callable[[], Awaitable[None]]] = [
        identity.start, edge.start, start_quota, *(w.start for w in writers), status.start,
        *chat_starts]
    stops: list[Callable[[], Awaitable[None]]] = [*first_stops,
        status.aclose, *(b.aclose for b in backends), overrides.aclose, book.aclose, quota.aclose,
        edge.aclose, *(w.aclose for w in reversed(writers)), identity.aclose]
    if tracing is not None:
        starts.append(tracing.start_export)
        stops.append(tracing.aclose)
    if share_state and isinstance(identity.state, MemoryState) \
            and settings.storage.share_state:
        shared = StateServer(identity.state, socket_path(resolve_paths(settings)[1]))

        async def share() -> None:
            await shared.start()

        starts.append(share)
        stops.insert(0, shared.aclose)
    admin = LazyAdmin(identity, edge, request_log, status)
    if settings.server.admin_at_start:
        starts.append(admin.build_now)
    gateway = Gateway(
        settings=settings, routes=routes, prefix_routes=prefix_routes,
        # unknown paths (404) and wrong methods pass the edge too
        fallback=Pipeline([telemetry, screen]), metrics=metrics, probes=probes,
        connections=connections,
        on_startup=starts, on_shutdown=stops,
        # each mounted app's requests are recorded too (component: login, web, admin)
        mounts={"/login": login, "/logout": login,
                **({SIGNUP_PATH: login} if settings.web.signup else {}),
                "/account": Recorded(guarded_web, telemetry, "web"),
                # the chat's pages and endpoints ("/" alone matches only "/": server.py)
                **{prefix: Recorded(guarded_web, telemetry, component)
                   for prefix, component in web_mounts.items()},
                "/admin/": Recorded(EdgeGuard(admin, edge), telemetry, "admin"),
                # the check's own routes: bans apply, challenges never (an API prefix)
                CHALLENGE_PREFIX: Recorded(EdgeGuard(build_challenge_app(Checkpoint(
                    human_check, edge.visitor_of_scope, rays=edge.rays)), edge),
                    telemetry, "web")},
    )
    if settings.status.enabled:  # answered from the snapshot, beside the probes
        gateway.local.update(status_handlers(status))
    return gateway


def app_from_env() -> Any:
    """Entry point for ``uvicorn --factory`` and worker processes (reads $GATEHOUSE_CONFIG)."""
    return create_app(load_settings())
