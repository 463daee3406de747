"""Administration over the API: accounts with contacts, cameras, users. Pages for them are in ``adminpages``.

Supervisors manage accounts and cameras, admins also users. Answers: 400 with ``{"error", "fields"}`` for invalid
input (a message per field), 409 for what the configuration file declares (read-only here) or what would break
the appliance (the last admin), 404 for unknown ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vmond.store import accounts as store
from vmond.store.cameras import get_camera
from vmond.store.monitoring import monitoring_dict
from vmond.store.scope import UnknownAccounts
from vmond.store.siteconfig import requeue_config
from vmond.store.users import (
    LastAdmin,
    UserExists,
    UserNotFound,
    create_user,
    delete_user,
    get_user,
    list_users,
    update_user,
)
from vmond.util import auth
from vmond.web import bodies
from vmond.web.cameras import with_supervision
from vmond.web.keys import CAMERAS, CHANGES, DB, SERVICES, config_of
from vmond.web.login import USERNAME_PATTERN
from vmond.web.params import parse_id, path_id
from vmond.web.scope import NEW_ACCOUNT_REFUSED, scope_of
from vmond.web.security import json_error, principal, require
from vmond.web.ws import close_sockets_of

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


def user_id(request: web.Request) -> int:
    who = principal(request)
    assert who is not None
    return int(who["user_id"])


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        return await bodies.json_object(request)
    except bodies.BodyError as exc:
        raise exc.http() from None


async def answer(call: Callable[[], Awaitable[Any]], status: int = 200) -> web.Response:
    """Run a store call and turn its exceptions into the API's error answers."""
    try:
        result = await call()
    except store.Invalid as exc:
        return web.json_response({"error": str(exc), "fields": exc.fields}, status=400)
    except (store.NotFound, UserNotFound):
        return json_error(404, "not found")
    except (store.ReadOnly, LastAdmin, UserExists) as exc:
        return json_error(409, str(exc) if not isinstance(exc, UserExists) else "that user name is taken")
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)
    if status == 204:
        return web.Response(status=204)
    return web.json_response(result, status=status)


async def cameras_changed(app: web.Application) -> None:
    """After a camera was added, changed or removed: the SMTP door and Home Assistant learn it now."""
    await app[CAMERAS].reload()
    if (forwarder := app[SERVICES].mqtt) is not None:
        forwarder.refresh_discovery()
    if (supervisor := app[SERVICES].supervisor) is not None:
        supervisor.nudge()  # a new camera, or a changed max_silence
    await site_config_changed(app)


async def site_config_changed(app: web.Application) -> None:
    """After an account or camera was added, changed, removed, armed, disarmed or snoozed: the central station's
    mirror of the site (the retained config message) learns it now."""
    await requeue_config(app[CHANGES], config_of(app))


async def hash_off_loop(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(None, auth.hash_password, password)


# --- accounts -----------------------------------------------------------------------------------------------------


def with_monitoring(request: web.Request, account: dict[str, Any]) -> dict[str, Any]:
    """Schedules (issue 17): the account with ``monitoring`` (monitored now, until when), in the site's zone."""
    return {**account, "monitoring": monitoring_dict(account, config_of(request.app).site.timezone)}


async def _monitored(request: web.Request, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return with_monitoring(request, await call)


@routes.get("/api/accounts")
@require("supervisor")
async def accounts_list(request: web.Request) -> web.Response:
    async def listed() -> dict[str, Any]:
        found = await _wrap(request, "accounts", store.list_accounts)
        return {"accounts": [with_monitoring(request, a) for a in found["accounts"]]}
    return await answer(listed)


async def _wrap(request: web.Request, key: str, fn: Callable[..., Any]) -> dict[str, Any]:
    return {key: await request.app[DB].read(fn, config_of(request.app).smtp.domain, scope_of(request))}


@routes.post("/api/accounts")
@require("supervisor")
async def accounts_create(request: web.Request) -> web.Response:
    if scope_of(request).limited:
        return json_error(403, NEW_ACCOUNT_REFUSED)
    data = await json_object(request)
    return await answer(lambda: _monitored(request, _save_account(request, data, None)), status=201)


@routes.get("/api/accounts/{account_id}")
@require("supervisor")
async def account_detail(request: web.Request) -> web.Response:
    return await answer(lambda: _monitored(request, request.app[DB].read(
        store.get_account, config_of(request.app).smtp.domain, path_id(request, "account_id"))))


@routes.patch("/api/accounts/{account_id}")
@require("supervisor")
async def account_update(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: _monitored(request, _save_account(request, data, path_id(request, "account_id"))))


@routes.delete("/api/accounts/{account_id}")
@require("supervisor")
async def account_delete(request: web.Request) -> web.Response:
    return await answer(lambda: remove_account(request, path_id(request, "account_id")), status=204)


async def _save_account(request: web.Request, data: dict[str, Any], account_id: int | None) -> dict[str, Any]:
    account: dict[str, Any] = await request.app[DB].write(store.save_account, config_of(request.app).smtp.domain,
                                                          data, user_id(request), account_id)
    await site_config_changed(request.app)
    return account


async def remove_account(request: web.Request, account_id: int) -> None:
    await request.app[DB].write(store.delete_account, account_id, user_id(request))
    await site_config_changed(request.app)


# --- cameras ------------------------------------------------------------------------------------------------------


async def save_camera(request: web.Request, data: dict[str, Any], camera_id: int | None) -> dict[str, Any]:
    """Create or change a camera; a new SMTP password is hashed off the loop; ``generate_password`` makes one and
    returns it this once (the installer types it into the camera)."""
    account_id = data.get("account_id")
    if isinstance(account_id, int) and not scope_of(request).allows(account_id):
        raise store.Invalid({"account_id": "no such account"})  # another account's, to a limited user
    generated = None
    password = data.get("smtp_password")
    if data.get("generate_password"):
        generated = password = auth.new_token()[:16]
    if password is not None and (not isinstance(password, str) or len(password) < auth.MIN_PASSWORD_LENGTH):
        raise store.Invalid({"smtp_password": f"at least {auth.MIN_PASSWORD_LENGTH} characters"})
    password_hash = await hash_off_loop(password) if password else None
    camera = await request.app[DB].write(store.save_camera, config_of(request.app).smtp.domain, data, user_id(request),
                                         camera_id, password_hash)
    await cameras_changed(request.app)  # the SMTP door learns the new address (or password) now
    if generated:
        camera["smtp_password"] = generated
    return (await with_supervision(request.app, [camera]))[0]


@routes.post("/api/cameras")
@require("supervisor")
async def cameras_create(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: save_camera(request, data, None), status=201)


@routes.patch("/api/cameras/{camera_id}")
@require("supervisor")
async def camera_update(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: save_camera(request, data, path_id(request, "camera_id")))


async def remove_camera(request: web.Request, camera_id: int) -> dict[str, Any]:
    outcome = await request.app[DB].write(store.delete_camera, camera_id, user_id(request))
    await cameras_changed(request.app)
    return {"id": camera_id, "outcome": outcome}


@routes.delete("/api/cameras/{camera_id}")
@require("supervisor")
async def camera_delete(request: web.Request) -> web.Response:
    return await answer(lambda: remove_camera(request, path_id(request, "camera_id")))


async def camera_or_404(request: web.Request, camera_id: int) -> dict[str, Any]:
    camera = await request.app[DB].read(get_camera, config_of(request.app).smtp.domain, camera_id)
    if camera is None:
        raise store.NotFound(camera_id)
    return (await with_supervision(request.app, [camera]))[0]


# --- users (admin) ------------------------------------------------------------------------------------------------


def check_user_fields(data: dict[str, Any], creating: bool) -> dict[str, str]:
    errors = {}
    if creating and not USERNAME_PATTERN.fullmatch(str(data.get("username", ""))):
        errors["username"] = "1 to 64 letters, digits, dots, dashes, underscores or @"
    if (creating or "role" in data) and data.get("role") not in auth.ROLES:
        errors["role"] = f"one of {', '.join(auth.ROLES)}"
    if creating or data.get("password"):
        if problem := auth.check_password_policy(str(data.get("password", ""))):
            errors["password"] = f"needs {problem}"
    if "active" in data and not isinstance(data["active"], bool):
        errors["active"] = "true or false"
    if "accounts" in data and account_ids(data["accounts"]) is None:
        errors["accounts"] = "a list of account ids (empty: every account)"
    return errors


def account_ids(value: Any) -> list[int] | None:
    """The ``accounts`` of a user as sent (ids as numbers or digit strings), or None when it is not such a list."""
    if not isinstance(value, list) or len(value) > 10_000:
        return None
    ids = [item if isinstance(item, int) and not isinstance(item, bool) else parse_id(str(item)) for item in value]
    if any(i is None or i <= 0 for i in ids):
        return None
    return [int(i) for i in ids if i is not None]


def _unknown_accounts(exc: UnknownAccounts) -> store.Invalid:
    return store.Invalid({"accounts": str(exc)})


async def create_user_checked(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    if errors := check_user_fields(data, creating=True):
        raise store.Invalid(errors)
    encoded = await hash_off_loop(str(data["password"]))
    try:
        return await request.app[DB].write(create_user, str(data["username"]), encoded, str(data["role"]),
                                           by_user_id=user_id(request), accounts=account_ids(data.get("accounts", [])))
    except UnknownAccounts as exc:
        raise _unknown_accounts(exc) from None


async def update_user_checked(request: web.Request, target: int, data: dict[str, Any]) -> dict[str, Any]:
    if errors := check_user_fields(data, creating=False):
        raise store.Invalid(errors)
    encoded = await hash_off_loop(str(data["password"])) if data.get("password") else None
    accounts = account_ids(data["accounts"]) if "accounts" in data else None
    try:
        user = await request.app[DB].write(update_user, target, user_id(request), data.get("role"),
                                           data.get("active"), encoded, accounts)
    except UnknownAccounts as exc:
        raise _unknown_accounts(exc) from None
    # Their open pages sign in again; a live connection keeps the rights it opened with (accounts included).
    if encoded is not None or data.get("active") is False or "role" in data or "accounts" in data:
        await close_sockets_of(request.app, user_id=target)  # their open pages must sign in again
    return user


async def delete_user_checked(request: web.Request, target: int) -> None:
    await request.app[DB].write(delete_user, target, user_id(request))
    await close_sockets_of(request.app, user_id=target)


@routes.get("/api/users")
@require("admin")
async def users_list(request: web.Request) -> web.Response:
    return await answer(lambda: _users(request))


async def _users(request: web.Request) -> dict[str, Any]:
    return {"users": await request.app[DB].read(list_users)}


@routes.post("/api/users")
@require("admin")
async def users_create(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: create_user_checked(request, data), status=201)


@routes.get("/api/users/{user_id}")
@require("admin")
async def user_detail(request: web.Request) -> web.Response:
    return await answer(lambda: request.app[DB].read(get_user, path_id(request, "user_id")))


@routes.patch("/api/users/{user_id}")
@require("admin")
async def user_update(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: update_user_checked(request, path_id(request, "user_id"), data))


@routes.delete("/api/users/{user_id}")
@require("admin")
async def user_delete(request: web.Request) -> web.Response:
    return await answer(lambda: delete_user_checked(request, path_id(request, "user_id")), status=204)
