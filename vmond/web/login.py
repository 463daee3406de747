"""Logging in and out: the login form, first-run setup, API bearer tokens, and brute-force limits."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict, deque
from datetime import timedelta
from typing import Any

from aiohttp import web

from vmond import auth
from vmond.keys import DB, LOGIN_LIMITER
from vmond.store.models import utcnow
from vmond.store.users import create_session, create_user, credentials, delete_session, user_count
from vmond.web.render import render
from vmond.web.security import (
    PRECSRF_COOKIE,
    SESSION_COOKIE,
    check_precsrf,
    json_error,
    principal,
    public,
    require,
)
from vmond.web.ws import close_sockets_of

WEB_SESSION = timedelta(hours=12)  # one guard shift
API_TOKEN = timedelta(hours=24)
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class LoginLimiter:
    """Counts failed logins per client address and per username in a sliding window; bounded in memory."""

    def __init__(self, per_address: int = 10, per_user: int = 20, window: float = 300.0,
                 max_keys: int = 4096) -> None:
        self._limits = {"addr": per_address, "user": per_user}
        self._window = window
        self._max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] < now - self._window:
            stamps.popleft()
        return stamps

    def retry_after(self, address: str, username: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in (("addr", address), ("user", username.lower())):
            stamps = self._recent(key, now)
            if len(stamps) >= self._limits[key[0]]:
                wait = max(wait, stamps[0] + self._window - now)
        return int(wait) + 1 if wait else 0

    def delay(self, address: str) -> float:
        """Seconds to hold back the answer to a failed login: growing with the recent failures from the address,
        up to two seconds. Slows a password-guessing script without ever locking anyone out (a typo costs nothing)."""
        failures = len(self._recent(("addr", address), time.monotonic()))
        return min(2.0, 0.1 * max(0, failures - 4))

    def failed(self, address: str, username: str) -> None:
        now = time.monotonic()
        for key in (("addr", address), ("user", username.lower())):
            stamps = self._recent(key, now)
            stamps.append(now)
            self._failures[key] = stamps
            self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(("addr", address), None)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def check_credentials(request: web.Request, username: str, password: str) -> dict[str, Any] | None:
    """The user when the password is right; None otherwise. The hash check runs off the event loop."""
    user = await request.app[DB].read(credentials, username)
    encoded = user["password_hash"] if user is not None else auth.dummy_hash()
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, auth.verify_password, password, encoded)
    return user if ok and user is not None else None


async def start_session(request: web.Request, user: dict[str, Any], kind: str, lifetime: timedelta) -> str:
    token = auth.new_token()
    csrf = secrets.token_urlsafe(24) if kind == "web" else None
    await request.app[DB].write(create_session, user["id"], kind, auth.token_hash(token), utcnow() + lifetime,
                                csrf, client_address(request))
    return token


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=request.secure or None,
                        path="/", max_age=int(WEB_SESSION.total_seconds()))


def _safe_next(target: str | None) -> str:
    # Only paths on this site: "//evil.example" or "https://..." would make the login an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _render_form(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    token = request.cookies.get(PRECSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, template, {"csrf_token": token, **context}, status=status)
    response.set_cookie(PRECSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure or None,
                        path="/")
    return response


@public
async def login_page(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) == 0:
        raise web.HTTPSeeOther("/setup")
    if principal(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return _render_form(request, "login.html", next=_safe_next(request.query.get("next")))


@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    if not await check_precsrf(request):
        return json_error(403, "CSRF check failed: reload the login page")
    form = await request.post()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    limiter = request.app[LOGIN_LIMITER]
    if wait := limiter.retry_after(client_address(request), username):
        return _render_form(request, "login.html", status=429, next=target, username=username,
                            error=f"Too many failed attempts. Try again in {wait} seconds.")
    user = await check_credentials(request, username, password)
    if user is None:
        limiter.failed(client_address(request), username)
        await asyncio.sleep(limiter.delay(client_address(request)))
        return _render_form(request, "login.html", status=401, next=target, username=username,
                            error="Wrong username or password.")
    limiter.succeeded(client_address(request))
    token = await start_session(request, user, "web", WEB_SESSION)
    response = web.HTTPSeeOther(target)
    set_session_cookie(request, response, token)
    raise response


@require("guard")
async def logout(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await request.app[DB].write(delete_session, auth.token_hash(cookie))
    who = principal(request)
    if who is not None:
        await close_sockets_of(request.app, user_id=who["user_id"], session_csrf=who.get("csrf_token"))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@public
async def setup_page(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) > 0:
        raise web.HTTPNotFound()
    return _render_form(request, "setup.html")


@public
async def setup_submit(request: web.Request) -> web.StreamResponse:
    if await request.app[DB].read(user_count) > 0:
        raise web.HTTPNotFound()
    if not await check_precsrf(request):
        return json_error(403, "CSRF check failed: reload the setup page")
    form = await request.post()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    errors = {}
    if not USERNAME_PATTERN.fullmatch(username):
        errors["username"] = "1 to 64 letters, digits, dots, dashes, underscores or @."
    if problem := auth.check_password_policy(password):
        errors["password"] = f"The password needs {problem}."
    if "password2" in form and form.get("password2") != password:
        errors["password2"] = "The two passwords differ."
    if errors:
        return _render_form(request, "setup.html", status=400, username=username, errors=errors)
    loop = asyncio.get_running_loop()
    encoded = await loop.run_in_executor(None, auth.hash_password, password)
    user = await request.app[DB].write(create_user, username, encoded, "admin", only_if_first=True)
    if user is None:
        raise web.HTTPNotFound()  # another browser finished setup first
    token = await start_session(request, user, "web", WEB_SESSION)
    response = web.HTTPSeeOther("/")
    set_session_cookie(request, response, token)
    raise response


@public
async def api_token(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return json_error(400, 'send JSON {"username": ..., "password": ...}')
    limiter = request.app[LOGIN_LIMITER]
    if wait := limiter.retry_after(client_address(request), username):
        return json_error(429, "too many failed attempts", **{"Retry-After": str(wait)})
    user = await check_credentials(request, username, password)
    if user is None:
        limiter.failed(client_address(request), username)
        await asyncio.sleep(limiter.delay(client_address(request)))
        return json_error(401, "wrong username or password")
    limiter.succeeded(client_address(request))
    token = await start_session(request, user, "api", API_TOKEN)
    return web.json_response({"access_token": token, "token_type": "bearer",
                              "expires_in": int(API_TOKEN.total_seconds())})
