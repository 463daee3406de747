"""The web application factory and the HTTP listener that serves it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from vmond.web import admin, adminpages, alarms, api, cameras, dismissals, display, keys, login, pages, ws
from vmond.web import live as live
from vmond.web import monitoring as monitoring
from vmond.web import remote as remote
from vmond.web import reports as reports
from vmond.web import sites as sites
from vmond.web.accesslog import ACCESS_LOGGER, AccessLog
from vmond.web.bodies import MAX_BODY
from vmond.web.connections import KEEPALIVE_TIMEOUT, ConnectionGuard, GuardedSite, first_request_middleware
from vmond.web.hosts import HostPolicy, check_host
from vmond.web.paths import WebPaths, find_web_paths
from vmond.web.scope import limit_to_accounts
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
    app = web.Application(middlewares=[first_request_middleware, security_headers, check_host, authenticate,
                                       limit_to_accounts],
                          client_max_size=MAX_BODY)
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
    bridge = services.bridge  # several central nodes: who has which alarm open is told to the others as well
    app[keys.PRESENCE] = ws.Presence(services.bus, share=None if bridge is None
                                     else functools.partial(bridge.share, ws.PRESENCE_MESSAGE))
    if bridge is not None:
        bridge.on_message(ws.PRESENCE_MESSAGE, app[keys.PRESENCE].remote)
    public_host = urlsplit(config.web.public_url).hostname if config.web.public_url else None
    app[keys.WARNINGS] = Repeats()
    app[keys.HOSTS] = HostPolicy(config.web.allowed_hosts + ((public_host,) if public_host else ()))
    app[keys.COMMAND_SECRETS] = remote.CommandSecrets(services.io)
    app[keys.CONNECTIONS] = ConnectionGuard(config.web.max_connections, config.web.max_connections_per_peer)
    app.cleanup_ctx.append(ws.session_watch)
    app.cleanup_ctx.append(ws.presence_refresh)

    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(paths.templates)),
        autoescape=True,  # every template, whatever its file name
        filters=display.FILTERS,
    )

    # Each module declares its routes next to its handlers. Their order matters only where one path could match
    # another's (aiohttp 3.8 tries them in order): within a module, and the static files last.
    for module in (pages, login, ws, api, dismissals, cameras, alarms, live, admin, adminpages, reports,
                   monitoring, sites, remote):
        app.router.add_routes(module.routes)
    app.router.add_routes([api.metrics_route(config)])
    app.router.add_static("/static/", str(paths.static), name="static")
    app.on_shutdown.append(ws.close_all)
    app.on_shutdown.append(live.end_streams)  # or the web server would wait out its timeout for the streams
    return app


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
