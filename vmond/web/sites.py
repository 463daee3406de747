"""A central station's sites over the web (issue 18): ``GET /api/sites`` and the ``/sites`` page, each site's link
(online, offline, silent), last message, heartbeat and figures, kept live by the ``site.updated`` messages."""

from __future__ import annotations

from aiohttp import web

from vmond.store.sites import list_sites
from vmond.web.keys import BUS, DB, config_of
from vmond.web.render import render
from vmond.web.security import require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


@routes.get("/api/sites")
@require("guard")
async def api_sites(request: web.Request) -> web.Response:
    """``{"sites": [{"id", "name", "online", "link", "last_message_at", ...}]}``: on an appliance, an empty list."""
    return web.json_response({"sites": await request.app[DB].read(list_sites)})


@routes.get("/sites")
@require("guard")
async def sites_page(request: web.Request) -> web.StreamResponse:
    """Each site's row (on an appliance, which is a site itself, a page that says it has none; not in its menu)."""
    seq = request.app[BUS].last_seq  # before reading: what changes meanwhile is replayed over /ws
    sites = await request.app[DB].read(list_sites)
    return render(request, "sites.html", {"sites": sites, "seq": seq,
                                          "site_silence": config_of(request.app).central.site_silence})
