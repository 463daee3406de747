"""Logging in and out: the login form, first-run setup, API bearer tokens, and what keeps guessing slow.

Everything here answers without a session, so every body is small and bounded (:mod:`vmond.web.bodies`) and
every password check is counted before it runs (:mod:`vmond.web.throttle`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDict
from yarl import URL

from vmond.config.values import Network
from vmond.store.users import create_session, create_user, credentials, delete_session, user_count
from vmond.util import auth
from vmond.util.clock import utcnow
from vmond.util.ratelimit import peer_ip
from vmond.web.bodies import SMALL_BODY, BodyError, json_object, small_form
from vmond.web.keys import AUTH_VIA, DB, LOGIN_LIMITER, config_of
from vmond.web.render import render
from vmond.web.security import (
    PRECSRF_COOKIE,
    SESSION_COOKIE,
    json_error,
    precsrf_ok,
    principal,
    public,
    require,
    served_securely,
)
from vmond.web.throttle import MAX_NAME
from vmond.web.ws import close_session_sockets

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

WEB_SESSION = timedelta(hours=12)  # one guard shift
API_TOKEN = timedelta(hours=24)
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_PASSWORD = 1024  # characters; a passphrase fits, a megabyte does not
MAX_NEXT = 2048
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x20\x7f\\]")  # browsers drop tabs and newlines from URLs: "/\t/x" is "//x"


def client_address(request: web.Request) -> str:
    """The browser's address: the peer's, or behind the proxies of ``web.trusted_proxies`` the address the last
    of them saw (``X-Forwarded-For`` read from the right, past the trusted ones; what a client put there itself
    is further left and never read)."""
    address = request.remote or "unknown"
    trusted = config_of(request.app).web.trusted_proxies
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
    while trusted and _within(address, trusted) and forwarded:
        hop = forwarded.pop().strip()
        if not _within(hop, ()):  # not an IP address at all: a proxy of ours writes none such
            break
        address = hop
    return address


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether *address* is an IP address in one of *networks* (with no networks: whether it is an address)."""
    try:
        ip = ipaddress.ip_address(peer_ip(address))
    except ValueError:
        return False
    return not networks or any(ip in network for network in networks)


async def check_credentials(request: web.Request, username: str, password: str) -> dict[str, Any] | None:
    """The user when the password is right; None otherwise. The hash check runs off the event loop, at most
    a few at a time; a name or password no user can have is refused without one."""
    if not USERNAME_PATTERN.fullmatch(username) or len(password) > MAX_PASSWORD:
        return None
    user = await request.app[DB].read(credentials, username)
    encoded = user["password_hash"] if user is not None else auth.dummy_hash()
    loop = asyncio.get_running_loop()
    async with request.app[LOGIN_LIMITER].hash_slots:
        ok = await loop.run_in_executor(None, auth.verify_password, password, encoded)
    return user if ok and user is not None else None


async def start_session(request: web.Request, user: dict[str, Any], kind: str, lifetime: timedelta) -> str:
    token = auth.new_token()
    csrf = secrets.token_urlsafe(24) if kind == "web" else None
    await request.app[DB].write(create_session, user["id"], kind, auth.token_hash(token), utcnow() + lifetime,
                                csrf, client_address(request))
    return token


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=served_securely(request) or None,
                        path="/", max_age=int(WEB_SESSION.total_seconds()))


async def safe_next(request: web.Request, target: str | None) -> str:
    """*target* when it is a page of this dashboard, else "/": a login must never redirect elsewhere."""
    if not target or len(target) > MAX_NEXT or _UNSAFE_IN_NEXT.search(target):
        return "/"
    try:
        parts = urlsplit(target)
        url = URL(target)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    # The dashboard's own: a GET route of ours must answer it (no 404 or 405), as the router sees it.
    match = await request.app.router.resolve(request.clone(method="GET", rel_url=url))
    if match.http_exception is not None or url.path.startswith("/static/"):
        return "/"
    return target


def _render_form(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    token = request.cookies.get(PRECSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, template, {"csrf_token": token, **context}, status=status)
    response.set_cookie(PRECSRF_COOKIE, token, httponly=True, samesite="Strict",
                        secure=served_securely(request) or None,
                        path="/")
    return response


async def _form_before_login(request: web.Request) -> MultiDict[str] | web.Response:
    """The posted form, or the answer to give instead (too big, not a form, CSRF check failed)."""
    try:
        form = await small_form(request)
    except BodyError as exc:
        return exc.response()
    if not precsrf_ok(request, form):
        return json_error(403, "CSRF check failed: reload the page")
    return form


@routes.get("/login")
@public
async def login_page(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) == 0:
        raise web.HTTPSeeOther("/setup")
    target = await safe_next(request, request.query.get("next"))
    if principal(request) is not None:
        raise web.HTTPSeeOther(target)
    return _render_form(request, "login.html", next=target)


@routes.post("/login")
@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await _form_before_login(request)
    if isinstance(form, web.Response):
        return form
    username, password = form.get("username", "").strip(), form.get("password", "")
    target = await safe_next(request, form.get("next", "/"))
    shown_name = username[:MAX_NAME]  # put back into the form, never a megabyte of it
    limiter = request.app[LOGIN_LIMITER]
    attempt = limiter.attempt(client_address(request), username)
    if attempt.retry_after:
        return _render_form(request, "login.html", status=429, next=target, username=shown_name,
                            error=f"Too many failed attempts. Try again in {attempt.retry_after} seconds.")
    user = await check_credentials(request, username, password)
    if user is None:
        await asyncio.sleep(limiter.delay(attempt))
        return _render_form(request, "login.html", status=401, next=target, username=shown_name,
                            error="Wrong username or password.")
    limiter.succeeded(attempt)
    token = await start_session(request, user, "web", WEB_SESSION)
    response = web.HTTPSeeOther(target)
    set_session_cookie(request, response, token)
    raise response


@routes.post("/logout")
@require("guard")
async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session that made the request: the browser's cookie session, or the bearer token (revoked)."""
    who = principal(request)
    assert who is not None
    await request.app[DB].write(delete_session, who["session_hash"])
    await close_session_sockets(request.app, who["session_hash"])
    if request[AUTH_VIA] == "bearer":
        return web.Response(status=204)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@routes.get("/setup")
@public
async def setup_page(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) > 0:
        raise web.HTTPNotFound()
    return _render_form(request, "setup.html")


@routes.post("/setup")
@public
async def setup_submit(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) > 0:
        raise web.HTTPNotFound()
    form = await _form_before_login(request)
    if isinstance(form, web.Response):
        return form
    username, password = form.get("username", "").strip(), form.get("password", "")
    errors = {}
    if not USERNAME_PATTERN.fullmatch(username):
        errors["username"] = "1 to 64 letters, digits, dots, dashes, underscores or @."
    if problem := auth.check_password_policy(password):
        errors["password"] = f"The password needs {problem}."
    elif len(password) > MAX_PASSWORD:
        errors["password"] = f"The password may have at most {MAX_PASSWORD} characters."
    if "password2" in form and form.get("password2") != password:
        errors["password2"] = "The two passwords differ."
    if errors:
        return _render_form(request, "setup.html", status=400, username=username[:MAX_NAME], errors=errors)
    loop = asyncio.get_running_loop()
    encoded = await loop.run_in_executor(None, auth.hash_password, password)
    user = await request.app[DB].write(create_user, username, encoded, "admin", only_if_first=True)
    if user is None:
        raise web.HTTPNotFound()  # another browser finished setup first
    token = await start_session(request, user, "web", WEB_SESSION)
    response = web.HTTPSeeOther("/")
    set_session_cookie(request, response, token)
    raise response


@routes.post("/api/token")
@public
async def api_token(request: web.Request) -> web.StreamResponse:
    try:
        body = await json_object(request, SMALL_BODY)
    except BodyError as exc:
        return exc.response()
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return json_error(400, 'send JSON {"username": ..., "password": ...}')
    limiter = request.app[LOGIN_LIMITER]
    attempt = limiter.attempt(client_address(request), username)
    if attempt.retry_after:
        return json_error(429, "too many failed attempts", **{"Retry-After": str(attempt.retry_after)})
    user = await check_credentials(request, username, password)
    if user is None:
        await asyncio.sleep(limiter.delay(attempt))
        return json_error(401, "wrong username or password")
    limiter.succeeded(attempt)
    token = await start_session(request, user, "api", API_TOKEN)
    return web.json_response({"access_token": token, "token_type": "bearer",
                              "expires_in": int(API_TOKEN.total_seconds())})
