"""Rendering a page: the template's own context plus what every page needs (user, CSRF token, site)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from vmond.util.version import VERSION
from vmond.web.keys import BUS, PRINCIPAL, config_of


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    # Not aiohttp_jinja2's context processors: their middleware stores under a plain string request key,
    # which newer aiohttp warns about on every request.
    who = request.get(PRINCIPAL)
    base = {
        "user": who,
        "session_csrf": who.get("csrf_token") if who else None,
        "version": VERSION,
        "site": config_of(request.app).site,
        "central": config_of(request.app).central.enabled,  # a central station: its sites on the wall and pages
        "bus_id": request.app[BUS].id,  # whose sequence numbers the page's data-seq is (pages.js: /ws?bus=)
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)
