"""Who is asking, and may they: session and bearer authentication, roles on every route, CSRF, safe headers.

Every route handler is marked with :func:`require` (a minimum role) or :func:`public`; a test checks that no
route lacks a mark. Browsers authenticate with an HttpOnly session cookie and must send the session's CSRF
token with every state-changing request; other clients send ``Authorization: Bearer <token>`` and need no CSRF
token (a browser never adds that header on its own).

Behind a reverse proxy that ends TLS (several central nodes behind one name, issue 19) the browser's origin is
``https://<public name>`` while the node itself is asked over plain HTTP: the origin of ``web.public_url`` counts
as the dashboard's own too, and cookies are then marked Secure.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from vmond.store.users import session_principal
from vmond.util import auth
from vmond.web.bodies import form_fields
from vmond.web.keys import AUTH_VIA, DB, PRINCIPAL, WARNINGS, config_of

log = logging.getLogger(__name__)

SESSION_COOKIE = "vmond_session"
PRECSRF_COOKIE = "vmond_csrf"  # double-submit token for the forms shown before login (login, setup)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; script-src 'self'; "
    "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path in ("/ws", "/metrics")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def principal(request: web.Request) -> dict[str, Any] | None:
    return request.get(PRINCIPAL)


def public(handler: Handler) -> Handler:
    handler.vmond_access = "public"  # type: ignore[attr-defined]  # a mark on the function, read per request
    return handler


def require(role: str) -> Callable[[Handler], Handler]:
    """Allow the handler only to users with at least *role*; others get 401 (or the login page) or 403."""
    assert role in auth.ROLES

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = principal(request)
            if who is None:
                if is_api(request) or request.path.startswith("/media/"):
                    return json_error(401, "authentication required", **{"WWW-Authenticate": "Bearer"})
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/?=&')}")
            if not auth.role_allows(who["role"], role):
                return json_error(403, f"this needs the {role} role")
            return await handler(request)

        guarded.vmond_access = role  # type: ignore[attr-defined]  # the same mark; test_web checks every route has one
        return guarded

    return decorate


def _origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    default_port = {"http": ":80", "https": ":443"}.get(parts.scheme.lower())
    if default_port and netloc.endswith(default_port):
        netloc = netloc[:-len(default_port)]
    return parts.scheme.lower(), netloc


def same_origin(request: web.Request, origin: str) -> bool:
    """True when *origin* (an Origin header) names this very dashboard (scheme, host and port), as the browser
    reached it directly or through the proxy that ``web.public_url`` names."""
    parts = urlsplit(origin)
    if not parts.scheme:
        return False
    if parts.scheme == request.scheme and parts.netloc.lower() == request.host.lower():
        return True
    public_url = config_of(request.app).web.public_url
    return public_url is not None and _origin_of(origin) == _origin_of(public_url)


def served_securely(request: web.Request) -> bool:
    """Whether the browser reached the dashboard over HTTPS: directly, or through the proxy of an https
    ``web.public_url`` (asked for by that name; the same node asked over plain HTTP on its own address, from
    the LAN, must still be able to keep its cookie)."""
    if request.secure:
        return True
    public_url = config_of(request.app).web.public_url
    if public_url is None or not public_url.lower().startswith("https:"):
        return False
    return (urlsplit(public_url).hostname or "") == urlsplit(f"//{request.host}").hostname


def origin_ok(request: web.Request) -> bool:
    """No Origin (not a browser) or our own. Browsers send Origin with every POST and every WebSocket."""
    origin = request.headers.get("Origin")
    return origin is None or same_origin(request, origin)


async def _csrf_token_sent(request: web.Request) -> str:
    token = request.headers.get(CSRF_HEADER, "")
    if not token and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        token = (await form_fields(request)).get(CSRF_FIELD, "")
    return token


def same_token(sent: str, expected: str) -> bool:
    """Constant-time comparison of two tokens; text that is not ASCII (no token of ours is) is just different."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def precsrf_ok(request: web.Request, form: Mapping[str, str]) -> bool:
    """For forms before login: Origin must be ours (when sent), and a form token must match its cookie."""
    if not origin_ok(request):
        return False
    sent = request.headers.get(CSRF_HEADER, "") or form.get(CSRF_FIELD, "")
    cookie = request.cookies.get(PRECSRF_COOKIE, "")
    if sent or cookie:
        return bool(sent) and same_token(sent, cookie)
    return request.headers.get("Origin") is None  # a script or curl: nothing a browser could be tricked into


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    who = None
    via = None
    token_hash = None
    header = request.headers.get("Authorization", "")
    if request.path.startswith("/static/"):
        pass
    elif header[:7].lower() == "bearer ":
        via = "bearer"
        token_hash = auth.token_hash(header[7:].strip())
        who = await request.app[DB].read(session_principal, token_hash, "api")
    elif cookie := request.cookies.get(SESSION_COOKIE):
        via = "cookie"
        token_hash = auth.token_hash(cookie)
        who = await request.app[DB].read(session_principal, token_hash, "web")
    if who is not None:
        who["session_hash"] = token_hash  # which session this is: logout and expiry end exactly this one
    request[PRINCIPAL] = who
    request[AUTH_VIA] = via
    # Public handlers (login, setup, token) act with no session's authority and check their own form token.
    acts_as_user = getattr(request.match_info.handler, "vmond_access", None) != "public"
    if via == "cookie" and who is not None and request.method not in SAFE_METHODS and acts_as_user:
        sent = await _csrf_token_sent(request)
        expected = who.get("csrf_token") or ""
        if not (origin_ok(request) and sent and same_token(sent, expected)):
            if (quiet := request.app[WARNINGS].due("csrf")) is not None:
                log.warning("refused %s %s from %s: CSRF token or Origin missing or wrong (%d more since the last "
                            "warning)", request.method, request.path, who["username"], quiet)
            return json_error(403, "CSRF check failed: reload the page")
    return await handler(request)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _add_headers(exc, request.path)
        raise
    _add_headers(response, request.path)
    return response


def _add_headers(response: web.StreamResponse, path: str) -> None:
    if response.prepared:
        return  # a WebSocket or a streamed file: its headers are already on the wire
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if "Cache-Control" not in headers:
        # Pages and API answers carry live state and personal data; static files may be kept a little.
        headers["Cache-Control"] = "public, max-age=600" if path.startswith("/static/") else "no-store"
