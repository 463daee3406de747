"""Cameras over the API for supervisors and installers: the list, and each camera's diagnostics."""

from __future__ import annotations

from aiohttp import web

from vmond.keys import CONFIG, DB
from vmond.store.cameras import get_camera, list_cameras
from vmond.web.security import json_error, require


def _camera_id(request: web.Request) -> int:
    try:
        return int(request.match_info["camera_id"])
    except ValueError:
        raise web.HTTPNotFound() from None


@require("supervisor")
async def api_list(request: web.Request) -> web.Response:
    cameras = await request.app[DB].read(list_cameras, request.app[CONFIG].smtp.domain)
    return web.json_response({"cameras": cameras})


@require("supervisor")
async def api_detail(request: web.Request) -> web.Response:
    camera = await request.app[DB].read(get_camera, request.app[CONFIG].smtp.domain, _camera_id(request))
    if camera is None:
        return json_error(404, "no such camera")
    return web.json_response(camera)
