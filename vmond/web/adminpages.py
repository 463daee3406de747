"""Administration pages: forms for accounts (with contacts), cameras and users, on top of the API's checks.

Plain HTML forms (they work without JavaScript): a valid post redirects, an invalid one shows the form again with
the message next to each field; deleting asks for confirmation on a page of its own.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from vmond.config import dump_masked
from vmond.config.tls import fingerprint
from vmond.store import accounts as store
from vmond.store.actionplans import plan_as_text, plan_from_text
from vmond.store.cameras import list_cameras
from vmond.store.refusals import list_refusals
from vmond.store.users import LastAdmin, UserExists, UserNotFound, get_user, list_users
from vmond.util import auth
from vmond.web.admin import (
    camera_or_404,
    create_user_checked,
    delete_user_checked,
    remove_camera,
    save_camera,
    site_config_changed,
    update_user_checked,
    user_id,
)
from vmond.web.bodies import form_fields
from vmond.web.cameras import auth_failures, cameras_without_password, failures_of, smtp_setup
from vmond.web.keys import DB, config_of
from vmond.web.monitoring import account_page_context, max_snooze
from vmond.web.params import parse_id, path_id
from vmond.web.render import render
from vmond.web.scope import NEW_ACCOUNT_REFUSED, scope_of
from vmond.web.security import require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

_CONTACT_KEY = re.compile(r"contacts-([0-9]{1,4})-(priority|name|phone|role|email|notify_url)")
_TYPED = ("name", "phone", "role", "email", "notify_url")  # a row with none of these is a spare row, not a contact


def _contact_rows(form: dict[str, str]) -> tuple[list[dict[str, str]], int]:
    """The contact rows as typed, in row order, and how many rows were left empty (spare rows)."""
    rows: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        if match := _CONTACT_KEY.fullmatch(key):
            rows.setdefault(int(match[1]), {})[match[2]] = value.strip()
    typed = [row for _, row in sorted(rows.items()) if any(row.get(k) for k in _TYPED)]
    return typed, len(rows) - len(typed)


def _contacts_for_store(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    contacts = []
    for position, row in enumerate(rows, start=1):
        priority: int | str = row.get("priority", "") or position  # empty: its place in the list
        if isinstance(priority, str) and re.fullmatch(r"[0-9]{1,6}", priority):
            priority = int(priority)  # anything else goes on as typed, for the store to refuse
        contacts.append({"name": row.get("name", ""), "phone": row.get("phone"), "email": row.get("email"),
                         "role": row.get("role"), "priority": priority,
                         "notify_url": row.get("notify_url")})  # shown masked; the mask sent back keeps it
    return contacts


async def _accounts(request: web.Request) -> list[dict[str, Any]]:
    """The accounts the user may see (and choose for a camera)."""
    return await request.app[DB].read(store.list_accounts, config_of(request.app).smtp.domain, scope_of(request))


# --- accounts -----------------------------------------------------------------------------------------------------


@routes.get("/accounts")
@require("supervisor")
async def accounts_page(request: web.Request) -> web.StreamResponse:
    return render(request, "accounts.html", {"accounts": await _accounts(request)})


def _account_form(request: web.Request, account: dict[str, Any], rows: list[dict[str, Any]] | None = None,
                  errors: dict[str, str] | None = None, spare: int = 1, added: bool = False,
                  status: int = 200, extra: dict[str, Any] | None = None) -> web.Response:
    """The account editor: its contacts (or the rows as typed) and *spare* empty rows to add more (the first
    of them focused when the installer just *added* one)."""
    rows = list(account.get("contacts", [])) if rows is None else rows
    spare = max(0, min(spare, store.MAX_CONTACTS - len(rows)))
    plan = account.get("action_plan_text", plan_as_text(account.get("action_plan")))  # as typed, or as saved
    plan_errors = [_step_error(key, message) for key, message in (errors or {}).items()
                   if key.startswith("action_plan")]
    return render(request, "account.html", {"account": account, "contacts": rows + [{}] * spare, "plan": plan,
                                            "plan_errors": plan_errors,
                                            "first_spare": len(rows) if spare else None, "added": added,
                                            "errors": errors or {}, "max_contacts": store.MAX_CONTACTS,
                                            **(extra or {})},
                  status=status)


def _step_error(key: str, message: str) -> str:
    """``action_plan[2].text: required`` as the editor says it: "Step 3: required"."""
    match = re.match(r"action_plan\[([0-9]+)\]\.?(\w*)", key)
    if match is None:
        return message
    return f"Step {int(match[1]) + 1}{' (kinds)' if match[2] == 'kinds' else ''}: {message}"


async def _account_or_404(request: web.Request, account_id: int) -> dict[str, Any]:
    try:
        return await request.app[DB].read(store.get_account, config_of(request.app).smtp.domain, account_id)
    except store.NotFound:
        raise web.HTTPNotFound() from None


@routes.get("/accounts/new")
@require("supervisor")
async def account_new(request: web.Request) -> web.StreamResponse:
    if scope_of(request).limited:
        raise web.HTTPForbidden(text=NEW_ACCOUNT_REFUSED)
    return _account_form(request, {"id": None, "from_config": False})


@routes.get("/accounts/{account_id}")
@require("supervisor")
async def account_page(request: web.Request) -> web.StreamResponse:
    account = await _account_or_404(request, path_id(request, "account_id"))
    return _account_form(request, account, spare=0 if account["from_config"] else 1,
                         extra=await account_page_context(request, account))  # schedules: monitoring


# Decorators apply bottom-up: /accounts/new goes first, as /accounts/{account_id} would match it too (aiohttp
# 3.8 tries routes in order).
@routes.post("/accounts/{account_id}")
@routes.post("/accounts/new")
@require("supervisor")
async def account_save(request: web.Request) -> web.StreamResponse:
    """Save the account; or, for the "Add a contact" button (without JavaScript), show the form again as typed
    with one more empty row."""
    account_id = path_id(request, "account_id") if "account_id" in request.match_info else None
    if account_id is None and scope_of(request).limited:
        raise web.HTTPForbidden(text=NEW_ACCOUNT_REFUSED)
    form = await form_fields(request)
    rows, empty = _contact_rows(form)
    typed = {"name": form.get("name", ""), "address": form.get("address", ""), "notes": form.get("notes", "")}
    shown = {**(await _account_or_404(request, account_id) if account_id else {"from_config": False}),
             **typed, "id": account_id}
    if "action_plan" in form:  # the action plan's editor: one step a line, "text | kinds"
        shown["action_plan_text"] = form["action_plan"]
    if "add_contact" in form:
        return _account_form(request, shown, rows, spare=empty + 1, added=True)
    data = {**typed, "contacts": _contacts_for_store(rows)}
    if "action_plan" in form:
        data["action_plan"] = plan_from_text(form["action_plan"])
    try:
        saved = await request.app[DB].write(store.save_account, config_of(request.app).smtp.domain, data,
                                            user_id(request), account_id)
    except store.Invalid as exc:
        return _account_form(request, shown, rows, exc.fields, spare=max(empty, 1), status=400)
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    await site_config_changed(request.app)
    raise web.HTTPSeeOther(f"/accounts/{saved['id']}")


@routes.post("/accounts/{account_id}/delete")
@routes.get("/accounts/{account_id}/delete")
@require("supervisor")
async def account_delete(request: web.Request) -> web.StreamResponse:
    account_id = path_id(request, "account_id")
    if request.method == "GET":
        return render(request, "confirm.html", {"what": "this account", "action": request.path,
                                                "back": f"/accounts/{account_id}"})
    try:
        await request.app[DB].write(store.delete_account, account_id, user_id(request))
    except store.Invalid as exc:
        raise web.HTTPConflict(text="; ".join(exc.fields.values())) from None
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    await site_config_changed(request.app)
    raise web.HTTPSeeOther("/accounts")


# --- cameras ------------------------------------------------------------------------------------------------------


def _camera_data(form: dict[str, str], creating: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("account_id", "").strip():
        data["account_id"] = parse_id(form["account_id"].strip()) or 0  # 0: no such account
    elif creating:
        data["account_id"] = None
    if form.get("rtsp_url", "").strip() or form.get("clear_rtsp_url"):
        data["rtsp_url"] = "" if form.get("clear_rtsp_url") else form["rtsp_url"]
    if "smtp_address" in form:
        data["smtp_address"] = form["smtp_address"]
    if form.get("smtp_password"):
        data["smtp_password"] = form["smtp_password"]
    data["generate_password"] = bool(form.get("generate_password"))
    data["clear_password"] = bool(form.get("clear_password"))
    if "max_silence" in form:  # supervision; empty: supervision.max_silence
        data["max_silence"] = form["max_silence"].strip() or None
    return data


async def _smtp_diagnostics(request: web.Request) -> dict[str, Any]:
    """What the cameras page shows about the SMTP door: failed logins, and cameras that cannot log in."""
    if scope_of(request).limited:  # the whole door's diagnostics, for users not limited to accounts
        return {"auth_failures": [], "without_password": []}
    return {"auth_failures": (await auth_failures(request.app))[:20],
            "without_password": cameras_without_password(request.app)}


@routes.get("/cameras")
@require("supervisor")
async def cameras_page(request: web.Request) -> web.StreamResponse:
    cameras = await request.app[DB].read(list_cameras, config_of(request.app).smtp.domain, scope_of(request))
    refusals = [] if scope_of(request).limited else await request.app[DB].read(list_refusals, 20)
    return render(request, "cameras.html", {"cameras": cameras, "refusals": refusals,
                                            "accounts": await _accounts(request), "errors": {}, "form": {},
                                            "domain": config_of(request.app).smtp.domain,
                                            **await _smtp_diagnostics(request)})


async def _camera_view(request: web.Request, camera_id: int, errors: dict[str, str] | None = None,
                       status: int = 200, generated: str | None = None,
                       form: dict[str, str] | None = None) -> web.Response:
    try:
        camera = await camera_or_404(request, camera_id)
    except store.NotFound:
        raise web.HTTPNotFound() from None
    setup = smtp_setup(request, camera)
    return render(request, "camera.html", {"camera": camera, "accounts": await _accounts(request),
                                           "errors": errors or {}, "generated": generated, "form": form,
                                           "domain": config_of(request.app).smtp.domain,
                                           "smtp_auth": config_of(request.app).smtp.auth, "setup": setup,
                                           "min_password_length": auth.MIN_PASSWORD_LENGTH,
                                           "auth_failures": failures_of(camera, await auth_failures(request.app)),
                                           "max_snooze": max_snooze(request)},  # the snooze form's longest
                  status=status)


@routes.get("/cameras/{camera_id}")
@require("supervisor")
async def camera_page(request: web.Request) -> web.StreamResponse:
    return await _camera_view(request, path_id(request, "camera_id"))


@routes.post("/cameras")
@require("supervisor")
async def camera_create(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    try:
        camera = await save_camera(request, _camera_data(form, creating=True), None)
    except store.Invalid as exc:
        cameras = await request.app[DB].read(list_cameras, config_of(request.app).smtp.domain, scope_of(request))
        return render(request, "cameras.html", {"cameras": cameras, "refusals": [], "form": form,
                                                "accounts": await _accounts(request), "errors": exc.fields,
                                                "domain": config_of(request.app).smtp.domain,
                                                **await _smtp_diagnostics(request)}, status=400)
    if "smtp_password" in camera:  # generated: shown this once, for the installer to type into the camera
        return await _camera_view(request, camera["id"], generated=camera["smtp_password"])
    raise web.HTTPSeeOther(f"/cameras/{camera['id']}")


@routes.post("/cameras/{camera_id}")
@require("supervisor")
async def camera_save(request: web.Request) -> web.StreamResponse:
    camera_id = path_id(request, "camera_id")
    form = await form_fields(request)
    try:
        camera = await save_camera(request, _camera_data(form, creating=False), camera_id)
    except store.Invalid as exc:  # shown again with what was typed (but passwords)
        typed = {key: form.get(key, "") for key in ("name", "smtp_address")}
        return await _camera_view(request, camera_id, errors=exc.fields, status=400, form=typed)
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    if "smtp_password" in camera:
        return await _camera_view(request, camera_id, generated=camera["smtp_password"])
    raise web.HTTPSeeOther(f"/cameras/{camera_id}")


@routes.post("/cameras/{camera_id}/delete")
@routes.get("/cameras/{camera_id}/delete")
@require("supervisor")
async def camera_delete(request: web.Request) -> web.StreamResponse:
    camera_id = path_id(request, "camera_id")
    if request.method == "GET":
        return render(request, "confirm.html", {
            "what": "this camera", "action": request.path, "back": f"/cameras/{camera_id}",
            "note": "A camera that has events is retired instead: it refuses mail and keeps its history."})
    try:
        await remove_camera(request, camera_id)
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther("/cameras")


# --- users --------------------------------------------------------------------------------------------------------


async def _user_data(request: web.Request) -> dict[str, Any]:
    form = await form_fields(request)
    data: dict[str, Any] = {key: form[key] for key in ("username", "password", "role") if form.get(key)}
    if "active" in form or "role" in form:
        data["active"] = form.get("active") == "on"
    if "accounts_shown" in form:  # the account boxes were on the form: none ticked is every account
        data["accounts"] = (await request.post()).getall("accounts", [])
    return data


async def _all_accounts(request: web.Request) -> list[dict[str, Any]]:
    """Every account, to choose a user's from: user administration is not limited to accounts."""
    return await request.app[DB].read(store.list_accounts, config_of(request.app).smtp.domain)


async def _users_page(request: web.Request, errors: dict[str, str] | None = None, form: dict[str, Any] | None = None,
                      status: int = 200) -> web.Response:
    accounts = await _all_accounts(request)
    return render(request, "users.html", {"users": await request.app[DB].read(list_users), "roles": auth.ROLES,
                                          "errors": errors or {}, "form": form or {}, "accounts": accounts,
                                          "account_names": {a["id"]: a["name"] for a in accounts},
                                          "min_password_length": auth.MIN_PASSWORD_LENGTH}, status=status)


@routes.get("/users")
@require("admin")
async def users_page(request: web.Request) -> web.StreamResponse:
    return await _users_page(request)


@routes.post("/users")
@require("admin")
async def user_create(request: web.Request) -> web.StreamResponse:
    data = await _user_data(request)
    form = {**data, "accounts": [str(a) for a in data.get("accounts", [])]}  # shown again as typed
    try:
        await create_user_checked(request, data)
    except store.Invalid as exc:
        return await _users_page(request, exc.fields, form, status=400)
    except UserExists:
        return await _users_page(request, {"username": "that user name is taken"}, form, status=400)
    raise web.HTTPSeeOther("/users")


async def _user_view(request: web.Request, errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    try:
        user = await request.app[DB].read(get_user, path_id(request, "user_id"))
    except UserNotFound:
        raise web.HTTPNotFound() from None
    return render(request, "user.html", {"account_user": user, "roles": auth.ROLES, "errors": errors or {},
                                         "accounts": await _all_accounts(request),
                                         "min_password_length": auth.MIN_PASSWORD_LENGTH}, status=status)


@routes.get("/users/{user_id}")
@require("admin")
async def user_page(request: web.Request) -> web.StreamResponse:
    return await _user_view(request)


@routes.post("/users/{user_id}")
@require("admin")
async def user_save(request: web.Request) -> web.StreamResponse:
    target = path_id(request, "user_id")
    data = await _user_data(request)
    data.pop("username", None)
    try:
        await update_user_checked(request, target, data)
    except store.Invalid as exc:
        return await _user_view(request, exc.fields, 400)
    except LastAdmin as exc:
        return await _user_view(request, {"role": str(exc)}, 409)
    except UserNotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther("/users")


@routes.post("/users/{user_id}/delete")
@routes.get("/users/{user_id}/delete")
@require("admin")
async def user_delete(request: web.Request) -> web.StreamResponse:
    target = path_id(request, "user_id")
    if request.method == "GET":
        return render(request, "confirm.html", {"what": "this user", "action": request.path,
                                                "back": f"/users/{target}"})
    try:
        await delete_user_checked(request, target)
    except LastAdmin as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except UserNotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther("/users")


@routes.get("/settings")
@require("admin")
async def settings_page(request: web.Request) -> web.StreamResponse:
    """What this appliance runs with: the configuration as loaded (secrets masked) and the certificate's fingerprint.
    Changed in the file (``vmond check-config``, then a restart), not here."""
    config = config_of(request.app)  # current: a SIGHUP reload may have changed its accounts
    certificate = config.web.tls.certificate
    loop = asyncio.get_running_loop()
    fingerprint_text = (await loop.run_in_executor(None, fingerprint, certificate)) if certificate else None
    return render(request, "settings.html", {"config_text": dump_masked(config), "source": config.source,
                                             "fingerprint": fingerprint_text})
