"""Typed handles for the services the web application uses (``app[DB]``) and for what a request carries
(``request[PRINCIPAL]``), declared in one place.

aiohttp 3.8 (Debian 12) has no ``web.AppKey`` and before 3.12 no ``web.RequestKey``; there a plain string key does
the same job at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Executor

    from vmond.config import Config
    from vmond.ingest.cameras import CameraDirectory
    from vmond.media.store import MediaStore
    from vmond.services import Services
    from vmond.store.changes import Changes
    from vmond.store.db import Database
    from vmond.util.bus import Bus
    from vmond.util.ratelimit import Repeats
    from vmond.web.connections import ConnectionGuard
    from vmond.web.hosts import HostPolicy
    from vmond.web.paths import WebPaths
    from vmond.web.remote import CommandSecrets
    from vmond.web.throttle import LoginLimiter
    from vmond.web.ws import Presence


def _app_key(name: str, type_: Any) -> Any:
    app_key = getattr(web, "AppKey", None)
    return app_key(name, type_) if app_key is not None else f"vmond.{name}"


def _request_key(name: str, type_: Any) -> Any:
    request_key = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
    return request_key(name, type_) if request_key is not None else f"vmond.{name}"


SERVICES: web.AppKey[Services] = _app_key("services", object)
DB: web.AppKey[Database] = _app_key("db", object)
BUS: web.AppKey[Bus] = _app_key("bus", object)
CHANGES: web.AppKey[Changes] = _app_key("changes", object)  # every change a guard makes goes through it
MEDIA: web.AppKey[MediaStore] = _app_key("media", object)
CAMERAS: web.AppKey[CameraDirectory] = _app_key("cameras", object)
IO: web.AppKey[Executor] = _app_key("io", object)
LOGIN_LIMITER: web.AppKey[LoginLimiter] = _app_key("login_limiter", object)
WEB_PATHS: web.AppKey[WebPaths] = _app_key("web_paths", object)
WS_CLIENTS: web.AppKey[dict[web.WebSocketResponse, dict[str, Any]]] = _app_key("ws_clients", dict)  # -> principal
PRESENCE: web.AppKey[Presence] = _app_key("presence", object)
CLOSING: web.AppKey[set[asyncio.Task[None]]] = _app_key("closing", set)  # sockets another node signed out
HOSTS: web.AppKey[HostPolicy] = _app_key("hosts", object)
WARNINGS: web.AppKey[Repeats] = _app_key("warnings", object)  # what the web side says about misbehaving clients
COMMAND_SECRETS: web.AppKey[CommandSecrets] = _app_key("command_secrets", object)  # a central's, per site
CONNECTIONS: web.AppKey[ConnectionGuard] = _app_key("connections", object)  # absent when not served by WebServer

PRINCIPAL: web.RequestKey[dict[str, Any] | None] = _request_key("principal", object)  # the signed-in user, or None
AUTH_VIA: web.RequestKey[str | None] = _request_key("auth_via", object)  # "cookie", "bearer" or None


def config_of(app: web.Application) -> Config:
    """The configuration as it is now. A SIGHUP reload replaces ``services.config`` (a started app is not changed),
    so the web reads it from there, never from a copy of its own."""
    return app[SERVICES].config
