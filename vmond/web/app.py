"""The web application factory and the HTTP listener that serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web

from vmond.config.tls import server_context
from vmond.util.ratelimit import Repeats
from vmond.web import admin, adminpages, alarms, api, cameras, display, keys, login, pages, ws
from vmond.web import live as live
from vmond.web.accesslog import ACCESS_LOGGER, AccessLog
from vmond.web.bodies import MAX_BODY
from vmond.web.connections import KEEPALIVE_TIMEOUT, ConnectionGuard, GuardedSite, first_request_middleware
from vmond.web.hosts import HostPolicy, check_host
from vmond.web.paths import WebPaths, find_web_paths
from vmond.web.security import authenticate, security_headers
from vmond.web.throttle import LoginLimiter

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.services import Services

log = logging.getLogger(__name__)

_AIOHTTP_VERSION = tuple(int(part) for part in aiohttp.__version__.split(".")[:2])


def create_app(config: Config, services: Services, web_paths: WebPaths | None = None) -> web.Application:
    """The dashboard and API, wired to *services*; the daemon and the tests both build it here."""
    paths = web_paths or find_web_paths()
    app = web.Application(middlewares=[first_request_middleware, security_headers, check_host, authenticate],
                          client_max_size=MAX_BODY)
    app[keys.CONFIG] = config
    app[keys.SERVICES] = services
    app[keys.DB] = services.db
    app[keys.BUS] = services.bus
    app[keys.CHANGES] = services.changes
    app[keys.MEDIA] = services.media
    app[keys.CAMERAS] = services.cameras
    app[keys.IO] = services.io
    app[keys.LOGIN_LIMITER] = LoginLimiter()
    app[keys.WEB_PATHS] = paths
    app[keys.WS_CLIENTS] = {}
    app[keys.PRESENCE] = ws.Presence(services.bus)
    public_host = urlsplit(config.web.public_url).hostname if config.web.public_url else None
    app[keys.WARNINGS] = Repeats()
    app[keys.HOSTS] = HostPolicy(config.web.allowed_hosts + ((public_host,) if public_host else ()))
    app[keys.CONNECTIONS] = ConnectionGuard(config.web.max_connections, config.web.max_connections_per_peer)
    app.cleanup_ctx.append(ws.session_watch)

    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(paths.templates)),
        autoescape=True,  # every template, whatever its file name
        filters=display.FILTERS,
    )

    app.router.add_get("/", pages.home)
    app.router.add_get("/login", login.login_page)
    app.router.add_post("/login", login.login_submit)
    app.router.add_post("/logout", login.logout)
    app.router.add_get("/setup", login.setup_page)
    app.router.add_post("/setup", login.setup_submit)
    app.router.add_get("/media/{media_id}", pages.media_file)
    app.router.add_get("/media/{media_id}/thumbnail", pages.media_thumbnail)
    app.router.add_get("/ws", ws.websocket)
    app.router.add_get("/api/health", api.health)
    app.router.add_get("/metrics", api.metrics_public if config.web.metrics_public else api.metrics)
    app.router.add_post("/api/token", login.api_token)
    app.router.add_get("/api/events", api.events_list)
    app.router.add_get("/api/events/{event_id}", api.event_detail)
    app.router.add_post("/api/events/{event_id}/dismiss", api.event_dismiss)
    app.router.add_get("/api/smtp/refusals", api.smtp_refusals)
    app.router.add_get("/api/smtp/auth-failures", cameras.api_auth_failures)
    app.router.add_post("/api/events/{event_id}/alarm", alarms.api_raise)
    app.router.add_get("/api/alarms", alarms.api_list)
    app.router.add_get("/api/alarms/{alarm_id}", alarms.api_detail)
    app.router.add_post("/api/alarms/{alarm_id}/notes", alarms.api_note)
    app.router.add_post("/api/alarms/{alarm_id}/acknowledge", alarms.api_acknowledge)
    app.router.add_post("/api/alarms/{alarm_id}/resolve", alarms.api_resolve)
    app.router.add_get("/alarms", alarms.page_list)
    app.router.add_get("/alarms/{alarm_id}", alarms.page_detail)
    app.router.add_post("/alarms/{alarm_id}/notes", alarms.form_note)
    app.router.add_post("/alarms/{alarm_id}/acknowledge", alarms.form_acknowledge)
    app.router.add_post("/alarms/{alarm_id}/resolve", alarms.form_resolve)
    app.router.add_post("/events/{event_id}/alarm", alarms.form_raise)
    app.router.add_get("/events/{event_id}", pages.event_page)
    app.router.add_get("/api/cameras", cameras.api_list)
    app.router.add_post("/api/cameras", admin.cameras_create)
    app.router.add_get("/api/cameras/{camera_id}", cameras.api_detail)
    app.router.add_get("/api/cameras/{camera_id}/snapshot", live.snapshot)
    app.router.add_get("/api/cameras/{camera_id}/live", live.stream)
    app.router.add_get("/api/live", live.status)
    app.router.add_get("/api/alarms/{alarm_id}/snapshot", live.alarm_snapshot)
    app.router.add_patch("/api/cameras/{camera_id}", admin.camera_update)
    app.router.add_delete("/api/cameras/{camera_id}", admin.camera_delete)
    app.router.add_get("/api/accounts", admin.accounts_list)
    app.router.add_post("/api/accounts", admin.accounts_create)
    app.router.add_get("/api/accounts/{account_id}", admin.account_detail)
    app.router.add_patch("/api/accounts/{account_id}", admin.account_update)
    app.router.add_delete("/api/accounts/{account_id}", admin.account_delete)
    app.router.add_get("/api/users", admin.users_list)
    app.router.add_post("/api/users", admin.users_create)
    app.router.add_get("/api/users/{user_id}", admin.user_detail)
    app.router.add_patch("/api/users/{user_id}", admin.user_update)
    app.router.add_delete("/api/users/{user_id}", admin.user_delete)
    _add_admin_pages(app.router)
    app.router.add_static("/static/", str(paths.static), name="static")
    app.on_shutdown.append(ws.close_all)
    app.on_shutdown.append(live.end_streams)  # or the web server would wait out its timeout for the streams
    return app


def _add_admin_pages(router: web.UrlDispatcher) -> None:
    router.add_get("/accounts", adminpages.accounts_page)
    router.add_get("/accounts/new", adminpages.account_new)
    router.add_post("/accounts/new", adminpages.account_save)
    router.add_get("/accounts/{account_id}", adminpages.account_page)
    router.add_post("/accounts/{account_id}", adminpages.account_save)
    router.add_get("/accounts/{account_id}/delete", adminpages.account_delete)
    router.add_post("/accounts/{account_id}/delete", adminpages.account_delete)
    router.add_get("/cameras", adminpages.cameras_page)
    router.add_post("/cameras", adminpages.camera_create)
    router.add_get("/cameras/{camera_id}", adminpages.camera_page)
    router.add_post("/cameras/{camera_id}", adminpages.camera_save)
    router.add_get("/cameras/{camera_id}/delete", adminpages.camera_delete)
    router.add_post("/cameras/{camera_id}/delete", adminpages.camera_delete)
    router.add_get("/settings", adminpages.settings_page)
    router.add_get("/users", adminpages.users_page)
    router.add_post("/users", adminpages.user_create)
    router.add_get("/users/{user_id}", adminpages.user_page)
    router.add_post("/users/{user_id}", adminpages.user_save)
    router.add_get("/users/{user_id}/delete", adminpages.user_delete)
    router.add_post("/users/{user_id}/delete", adminpages.user_delete)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.web.tls
    return None if tls.certificate is None else server_context(tls.certificate, tls.key)


class WebServer:
    """The HTTP(S) listener as an async context: bound on entry, graceful shutdown (WebSockets closed) on exit."""

    def __init__(self, config: Config, app: web.Application) -> None:
        self._config = config
        self._app = app
        self._runner: web.AppRunner | None = None
        self._fqdn: asyncio.Task[None] | None = None
        self.port = 0

    async def __aenter__(self) -> WebServer:
        options: dict[str, Any] = {"handle_signals": False, "access_log": logging.getLogger(ACCESS_LOGGER),
                                   "access_log_class": AccessLog, "keepalive_timeout": KEEPALIVE_TIMEOUT}
        if _AIOHTTP_VERSION >= (3, 9):
            options["shutdown_timeout"] = 5.0  # seconds for requests in flight; older aiohttp takes it elsewhere
        self._runner = web.AppRunner(self._app, **options)
        await self._runner.setup()
        host, port = self._config.web.listen
        context = _ssl_context(self._config)
        site = GuardedSite(self._runner, self._app[keys.CONNECTIONS], host or None, port, ssl_context=context)
        await site.start()
        self._fqdn = asyncio.create_task(self._app[keys.HOSTS].learn_fully_qualified_name())
        self.port = self._runner.addresses[0][1]
        log.info("dashboard on %s://%s:%d/", "https" if context else "http", host or "*", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._fqdn is not None:
            self._fqdn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fqdn
        if self._runner is not None:
            await self._runner.cleanup()
