"""Cameras over the API for supervisors and installers: the list, each camera's diagnostics, failed SMTP logins,
and what to type into a camera's e-mail settings."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vmond.store.cameras import cameras_last_seen_at, get_camera, list_cameras, peer_host
from vmond.store.supervision import silence_states
from vmond.web.keys import CAMERAS, DB, SERVICES, config_of
from vmond.web.params import path_id
from vmond.web.scope import scope_of
from vmond.web.security import json_error, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

_ANY_ADDRESS = ("", "0.0.0.0", "::")


async def with_supervision(app: web.Application, cameras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*cameras* with their ``supervision``: own ``max_silence``, the ``limit`` in force, ``counted_from``,
    ``silent_event_id``."""
    default = config_of(app).supervision.max_silence
    states = await app[DB].read(silence_states, [camera["id"] for camera in cameras], default)
    for camera in cameras:
        camera["supervision"] = states.get(camera["id"])
    return cameras


@routes.get("/api/cameras")
@require("supervisor")
async def api_list(request: web.Request) -> web.Response:
    cameras = await request.app[DB].read(list_cameras, config_of(request.app).smtp.domain, scope_of(request))
    return web.json_response({"cameras": await with_supervision(request.app, cameras)})


@routes.get("/api/cameras/{camera_id}")
@require("supervisor")
async def api_detail(request: web.Request) -> web.Response:
    camera = await request.app[DB].read(get_camera, config_of(request.app).smtp.domain, path_id(request, "camera_id"))
    if camera is None:
        return json_error(404, "no such camera")
    return web.json_response((await with_supervision(request.app, [camera]))[0])


async def auth_failures(app: web.Application) -> list[dict[str, Any]]:
    """Failed SMTP logins since the start, most recent first. For a name that is no camera's, ``peer_camera`` is
    the camera whose last mail came from that address: most likely the camera that now logs in wrongly."""
    smtp = app[SERVICES].smtp
    failures = smtp.logins.failures() if smtp is not None else []
    unknown = {failure["peer"] for failure in failures if failure["camera"] is None}
    seen = await app[DB].read(cameras_last_seen_at, unknown) if unknown else {}
    for failure in failures:
        failure["peer_camera"] = seen.get(failure["peer"]) if failure["camera"] is None else None
    return failures


@routes.get("/api/smtp/auth-failures")
@require("supervisor")
async def api_auth_failures(request: web.Request) -> web.Response:
    if scope_of(request).limited:  # the SMTP door's diagnostics belong to no account: for unlimited users
        return web.json_response({"auth_failures": []})
    return web.json_response({"auth_failures": await auth_failures(request.app)})


def failures_of(camera: dict[str, Any], failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed logins that concern *camera*: its own name tried, or tried from the address it last mailed from."""
    host = peer_host(camera["last_peer"]) if camera.get("last_peer") else None
    return [f for f in failures
            if (f["camera"] or {}).get("id") == camera["id"] or (f["camera"] is None and f["peer"] == host)]


def cameras_without_password(app: web.Application) -> list[dict[str, Any]]:
    """Under ``smtp.auth: per-camera``, the active cameras that cannot log in (no password set); else none."""
    if config_of(app).smtp.auth != "per-camera":
        return []
    domain = config_of(app).smtp.domain
    return [{"name": c.name, "smtp_address": f"{c.local_part}@{domain}", "id": c.id}
            for c in app[CAMERAS].without_password()]


def smtp_setup(request: web.Request, camera: dict[str, Any]) -> dict[str, Any]:
    """The settings to type into the camera's e-mail page, as this appliance runs now."""
    app = request.app
    smtp_config = config_of(app).smtp
    server = app[SERVICES].smtp
    host = smtp_config.listen.host
    if host in _ANY_ADDRESS:
        host = request.url.host or "this appliance's address"
    local_part = camera["smtp_address"].rpartition("@")[0]
    directory = app[CAMERAS]
    entry = directory.by_username(local_part)
    return {
        "auth": smtp_config.auth,
        "server": host,
        "port": server.port if server is not None else smtp_config.listen.port,
        "starttls": smtp_config.tls.certificate is not None,
        "implicit_tls_port": server.implicit_tls_port if server is not None and server.implicit_tls_port else None,
        "user": camera["smtp_address"],
        "local_part": local_part,
        "password_set": entry is not None and directory.has_password(entry),
        "recipient": camera["smtp_address"],
    }
