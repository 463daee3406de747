"""A central station's sites over the web (issue 18): ``GET /api/sites``, each site's link and figures."""

from __future__ import annotations

from aiohttp import web

from vmond.store.sites import list_sites
from vmond.web.keys import DB
from vmond.web.security import require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


@routes.get("/api/sites")
@require("guard")
async def api_sites(request: web.Request) -> web.Response:
    """``{"sites": [{"id", "name", "online", "last_message_at", ...}]}``: on an appliance, an empty list."""
    return web.json_response({"sites": await request.app[DB].read(list_sites)})
