"""The admin API under /admin/v1/: orgs, projects, keys, users and tiers over HTTP, with the
same semantics as ``gatehouse orgs | projects | keys | users | tiers`` (gatehouse/cli/accounts.py).

The gateway mounts it at ``/admin/`` and hands it full paths, its request id and the
``x-request-id`` header. Every route needs an admin key; the docs page and the OpenAPI
document are public (they describe the API and hold no data)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Query, Request, Response, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from gatehouse.admin import errors
from gatehouse.admin.auth import AdminAuth, bearer
from gatehouse.admin.bodylimit import BodyLimit
from gatehouse.admin.edge import edge_router
from gatehouse.admin.errors import about
from gatehouse.admin.health import health_router
from gatehouse.admin.health_page import PATH as HEALTH_PAGE
from gatehouse.admin.health_page import health_page_route
from gatehouse.admin.incidents import incidents_router
from gatehouse.admin.keys import keys_router
from gatehouse.admin.models import (
    OrgIn,
    OrgName,
    OrgOut,
    OrgPatch,
    Page,
    ProjectIn,
    ProjectOut,
    json_pages,
)
from gatehouse.admin.models import errors as responses
from gatehouse.admin.quota import quota_router
from gatehouse.admin.requests import requests_router
from gatehouse.admin.tiers import check_tier, tiers_router
from gatehouse.admin.usage import usage_router
from gatehouse.admin.users import users_router
from gatehouse.htmlpage import page_headers, source_hash
from gatehouse.identity.service import IdentityService
from gatehouse.store.accounts import NAME_PATTERN

if TYPE_CHECKING:
    from gatehouse.edge.screen import Edge
    from gatehouse.status.service import StatusService
    from gatehouse.telemetry.requestlog import RequestLog

PREFIX = "/admin/v1"
DOCS = f"{PREFIX}/docs"
ASSETS = f"{PREFIX}/docs/assets"
DOC_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
OPENAPI = f"{PREFIX}/openapi.json"
MAX_BODY_BYTES = 64 * 1024

DESCRIPTION = """\
Manage orgs, projects, API keys, users, tiers, firewall rules, bans, Ray IDs and
the request log, the traffic's health and the status page's incidents of a gatehouse
gateway.

Every endpoint needs `Authorization: Bearer <admin key>` (make the first one with
`gatehouse keys create --admin`). Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}, "request_id"}`, and every answer carries
`x-request-id`. See docs/admin-api.md.
"""


def orgs_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["orgs"])
    accounts = identity.accounts

    @router.get("/orgs", summary="List orgs", response_model=Page[OrgOut])
    async def list_orgs() -> Response:
        return await json_pages(await accounts.org_pages(), OrgOut.shaped)

    @router.post("/orgs", status_code=201, summary="Create an org",
                 responses=responses(409))
    async def create_org(body: OrgIn) -> OrgOut:
        tier = check_tier(identity.settings, body.tier, "api")
        with about("name"):
            return OrgOut.of(await accounts.create_org(body.name, tier))

    @router.get("/orgs/{org}", summary="Show an org", responses=responses(404))
    async def get_org(org: OrgName) -> OrgOut:
        return OrgOut.of(await accounts.org(org))

    @router.patch("/orgs/{org}", summary="Change an org's tier", responses=responses(404))
    async def update_org(org: OrgName, body: OrgPatch) -> OrgOut:
        """Keys without a tier of their own follow the org's tier at once, on every
        replica."""
        tier = check_tier(identity.settings, body.tier, "api")
        changed = await accounts.set_org_tier(org, tier)
        await identity.key_changed(None)
        return OrgOut.of(changed)

    @router.get("/projects", summary="List projects", responses=responses(404),
                response_model=Page[ProjectOut])
    async def list_projects(
        org: Annotated[str | None, Query(pattern=NAME_PATTERN,
                                         description="Only this org's projects.")] = None,
    ) -> Response:
        return await json_pages(await accounts.project_pages(org), ProjectOut.shaped)

    @router.post("/projects", status_code=201, summary="Create a project",
                 responses=responses(404, 409))
    async def create_project(body: ProjectIn) -> ProjectOut:
        with about("project"):
            org, project = await accounts.create_project(body.project)
        return ProjectOut.of(org.name, project)

    return router


class AdminApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI documents a 422 for every route with parameters; this API answers 400."""
        schema = super().openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema


def docs_page(title: str) -> HTMLResponse:
    """FastAPI's Swagger UI page on this API's own copy of Swagger UI (DOC_ASSETS), with a CSP
    that lets it load those files, run its one inline script (by hash) and call this API, and
    nothing else — no CDN, so it works on a machine without internet."""
    page = get_swagger_ui_html(openapi_url=OPENAPI, title=f"{title} - Swagger UI",
                               swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS}/favicon.png")
    body = bytes(page.body).decode()
    scripts = re.findall(r"<script>(.*?)</script>", body, re.DOTALL)
    headers = page_headers(script_src=" ".join(["'self'", *map(source_hash, scripts)]),
                           style_src="'self' 'unsafe-inline'", img_src="'self' data:",
                           connect_src="'self'")
    return HTMLResponse(body, headers=headers)


def build_admin_app(identity: IdentityService, edge: Edge | None = None,
                    request_log: RequestLog | None = None,
                    status: StatusService | None = None) -> FastAPI:
    app = AdminApp(title="gatehouse admin API", description=DESCRIPTION, version="1",
                  docs_url=None, openapi_url=OPENAPI, redoc_url=None, redirect_slashes=False,
                  swagger_ui_oauth2_redirect_url=None,
                  dependencies=[Security(bearer)],
                  responses=responses(400, 401, 403, 503))
    api = APIRouter(prefix=PREFIX)
    api.include_router(orgs_router(identity))
    api.include_router(keys_router(identity))
    api.include_router(quota_router(identity))
    api.include_router(users_router(identity))
    api.include_router(tiers_router(identity.settings))
    api.include_router(edge_router(identity, edge.bans if edge else None,
                                   edge.rays if edge else None))
    api.include_router(requests_router(identity, request_log))
    api.include_router(health_router(identity))
    api.include_router(usage_router(identity))
    if status is not None:
        api.include_router(incidents_router(status))
    app.include_router(api)
    app.add_route(HEALTH_PAGE, health_page_route(identity), include_in_schema=False)
    serve_docs(app)
    errors.install(app)
    assets = [f"{ASSETS}/{name}" for name in DOC_ASSETS]
    # inside AdminAuth (added later: outer), so a stranger is told 401 whatever the body
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(AdminAuth, identity=identity,
                       public=frozenset({DOCS, OPENAPI, *assets}))
    return app


def serve_docs(app: FastAPI) -> None:
    """Swagger UI at DOCS, its files from the copy the fastapi-offline package ships."""
    app.mount(ASSETS, StaticFiles(directory=str(Path(fastapi_offline.__file__).parent
                                                / "static")), name="docs-assets")
    docs = docs_page(app.title)

    async def show_docs(request: Request) -> HTMLResponse:
        return docs

    app.add_route(DOCS, show_docs, include_in_schema=False)
