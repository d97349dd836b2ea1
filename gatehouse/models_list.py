"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import ModelNotFound
from gatehouse.upstream.router import ModelRoute, Router


def _entry(route: ModelRoute) -> dict[str, Any]:
    return {"id": route.name, "object": "model", "created": route.created,
            "owned_by": route.owned_by}


class ModelsStage:
    name = "models"

    def __init__(self, router: Router) -> None:
        self.router = router

    async def enter(self, ctx: RequestContext) -> None:
        headers = {"content-type": "application/json"}
        if ctx.path in ("/v1/models", "/v1/models/"):
            data = [_entry(r) for r in self.router.routes.values()]
            ctx.reply = Reply(200, headers, orjson.dumps({"object": "list", "data": data}))
            return
        name = unquote(ctx.path[len("/v1/models/"):])
        route = self.router.routes.get(name)
        if route is None:  # (not put in ctx.model: clients must not mint metric labels)
            raise ModelNotFound(f"The model `{name}` does not exist or you do not have access "
                                "to it.", param="model")
        ctx.model = name
        ctx.reply = Reply(200, headers, orjson.dumps(_entry(route)))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
