"""Administration pages: forms for accounts (with contacts), cameras and users, on top of the API's checks.

Plain HTML forms (they work without JavaScript): a valid post redirects, an invalid one shows the form again with
the message next to each field; deleting asks for confirmation on a page of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from vmond import auth
from vmond.config import dump_masked
from vmond.keys import CONFIG, DB, SERVICES
from vmond.store import accounts as store
from vmond.store.cameras import list_cameras
from vmond.store.refusals import list_refusals
from vmond.store.users import LastAdmin, UserExists, UserNotFound, get_user, list_users
from vmond.tlscert import fingerprint
from vmond.web.admin import (
    camera_or_404,
    create_user_checked,
    delete_user_checked,
    match_id,
    remove_camera,
    save_camera,
    update_user_checked,
    user_id,
)
from vmond.web.cameras import auth_failures, cameras_without_password, failures_of, smtp_setup
from vmond.web.render import render
from vmond.web.security import require

CONTACT_ROWS_SPARE = 2


async def _form(request: web.Request) -> dict[str, str]:
    return {key: str(value) for key, value in (await request.post()).items()}


def _contacts_from_form(form: dict[str, str]) -> list[dict[str, Any]]:
    rows = sorted({int(key.split("-")[1]) for key in form if key.startswith("contacts-") and key.count("-") == 2})
    contacts = []
    for row in rows:
        name = form.get(f"contacts-{row}-name", "").strip()
        if not name:
            continue  # an empty row is a row not used
        priority = form.get(f"contacts-{row}-priority", "").strip()
        contacts.append({"name": name, **{k: form.get(f"contacts-{row}-{k}", "").strip() or None
                                          for k in ("phone", "email", "role")},
                         "priority": int(priority) if priority.isdigit() else len(contacts) + 1})
    return contacts


def _account_data(form: dict[str, str]) -> dict[str, Any]:
    return {"name": form.get("name", ""), "address": form.get("address", ""), "notes": form.get("notes", ""),
            "contacts": _contacts_from_form(form)}


async def _accounts(request: web.Request) -> list[dict[str, Any]]:
    return await request.app[DB].read(store.list_accounts, request.app[CONFIG].smtp.domain)


# --- accounts -----------------------------------------------------------------------------------------------------


@require("supervisor")
async def accounts_page(request: web.Request) -> web.StreamResponse:
    return render(request, "accounts.html", {"accounts": await _accounts(request)})


def _account_form(request: web.Request, account: dict[str, Any], errors: dict[str, str] | None = None,
                  status: int = 200) -> web.Response:
    contacts = list(account.get("contacts", [])) + [{}] * CONTACT_ROWS_SPARE
    return render(request, "account.html", {"account": account, "contacts": contacts, "errors": errors or {}},
                  status=status)


@require("supervisor")
async def account_new(request: web.Request) -> web.StreamResponse:
    return _account_form(request, {"id": None, "from_config": False})


@require("supervisor")
async def account_page(request: web.Request) -> web.StreamResponse:
    try:
        account = await request.app[DB].read(store.get_account, request.app[CONFIG].smtp.domain,
                                             match_id(request, "account_id"))
    except store.NotFound:
        raise web.HTTPNotFound() from None
    return _account_form(request, account)


@require("supervisor")
async def account_save(request: web.Request) -> web.StreamResponse:
    account_id = match_id(request, "account_id") if "account_id" in request.match_info else None
    data = _account_data(await _form(request))
    try:
        saved = await request.app[DB].write(store.save_account, request.app[CONFIG].smtp.domain, data,
                                            user_id(request), account_id)
    except store.Invalid as exc:
        return _account_form(request, {"id": account_id, "from_config": False, **data}, exc.fields, status=400)
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther(f"/accounts/{saved['id']}")


@require("supervisor")
async def account_delete(request: web.Request) -> web.StreamResponse:
    account_id = match_id(request, "account_id")
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
    raise web.HTTPSeeOther("/accounts")


# --- cameras ------------------------------------------------------------------------------------------------------


def _camera_data(form: dict[str, str], creating: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("account_id", "").isdigit():
        data["account_id"] = int(form["account_id"])
    elif creating:
        data["account_id"] = None
    if form.get("rtsp_url", "").strip() or form.get("clear_rtsp_url"):
        data["rtsp_url"] = "" if form.get("clear_rtsp_url") else form["rtsp_url"]
    if form.get("smtp_password"):
        data["smtp_password"] = form["smtp_password"]
    data["generate_password"] = bool(form.get("generate_password"))
    data["clear_password"] = bool(form.get("clear_password"))
    return data


async def _smtp_diagnostics(request: web.Request) -> dict[str, Any]:
    """What the cameras page shows about the SMTP door: failed logins, and cameras that cannot log in."""
    return {"auth_failures": (await auth_failures(request.app))[:20],
            "without_password": cameras_without_password(request.app)}


@require("supervisor")
async def cameras_page(request: web.Request) -> web.StreamResponse:
    cameras = await request.app[DB].read(list_cameras, request.app[CONFIG].smtp.domain)
    refusals = await request.app[DB].read(list_refusals, 20)
    return render(request, "cameras.html", {"cameras": cameras, "refusals": refusals,
                                            "accounts": await _accounts(request), "errors": {}, "form": {},
                                            **await _smtp_diagnostics(request)})


async def _camera_view(request: web.Request, camera_id: int, errors: dict[str, str] | None = None,
                       status: int = 200, generated: str | None = None) -> web.Response:
    try:
        camera = await camera_or_404(request, camera_id)
    except store.NotFound:
        raise web.HTTPNotFound() from None
    setup = smtp_setup(request, camera)
    return render(request, "camera.html", {"camera": camera, "accounts": await _accounts(request),
                                           "errors": errors or {}, "generated": generated,
                                           "smtp_auth": request.app[CONFIG].smtp.auth, "setup": setup,
                                           "auth_failures": failures_of(camera, await auth_failures(request.app))},
                  status=status)


@require("supervisor")
async def camera_page(request: web.Request) -> web.StreamResponse:
    return await _camera_view(request, match_id(request, "camera_id"))


@require("supervisor")
async def camera_create(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        camera = await save_camera(request, _camera_data(form, creating=True), None)
    except store.Invalid as exc:
        cameras = await request.app[DB].read(list_cameras, request.app[CONFIG].smtp.domain)
        return render(request, "cameras.html", {"cameras": cameras, "refusals": [], "form": form,
                                                "accounts": await _accounts(request), "errors": exc.fields,
                                                **await _smtp_diagnostics(request)}, status=400)
    if "smtp_password" in camera:  # generated: shown this once, for the installer to type into the camera
        return await _camera_view(request, camera["id"], generated=camera["smtp_password"])
    raise web.HTTPSeeOther(f"/cameras/{camera['id']}")


@require("supervisor")
async def camera_save(request: web.Request) -> web.StreamResponse:
    camera_id = match_id(request, "camera_id")
    try:
        camera = await save_camera(request, _camera_data(await _form(request), creating=False), camera_id)
    except store.Invalid as exc:
        return await _camera_view(request, camera_id, errors=exc.fields, status=400)
    except store.ReadOnly as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    if "smtp_password" in camera:
        return await _camera_view(request, camera_id, generated=camera["smtp_password"])
    raise web.HTTPSeeOther(f"/cameras/{camera_id}")


@require("supervisor")
async def camera_delete(request: web.Request) -> web.StreamResponse:
    camera_id = match_id(request, "camera_id")
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


def _user_data(form: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {key: form[key] for key in ("username", "password", "role") if form.get(key)}
    if "active" in form or "role" in form:
        data["active"] = form.get("active") == "on"
    return data


async def _users_page(request: web.Request, errors: dict[str, str] | None = None, form: dict[str, str] | None = None,
                      status: int = 200) -> web.Response:
    return render(request, "users.html", {"users": await request.app[DB].read(list_users), "roles": auth.ROLES,
                                          "errors": errors or {}, "form": form or {}}, status=status)


@require("admin")
async def users_page(request: web.Request) -> web.StreamResponse:
    return await _users_page(request)


@require("admin")
async def user_create(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        await create_user_checked(request, _user_data(form))
    except store.Invalid as exc:
        return await _users_page(request, exc.fields, form, status=400)
    except UserExists:
        return await _users_page(request, {"username": "that user name is taken"}, form, status=400)
    raise web.HTTPSeeOther("/users")


async def _user_view(request: web.Request, errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    try:
        user = await request.app[DB].read(get_user, match_id(request, "user_id"))
    except UserNotFound:
        raise web.HTTPNotFound() from None
    return render(request, "user.html", {"account_user": user, "roles": auth.ROLES, "errors": errors or {}},
                  status=status)


@require("admin")
async def user_page(request: web.Request) -> web.StreamResponse:
    return await _user_view(request)


@require("admin")
async def user_save(request: web.Request) -> web.StreamResponse:
    target = match_id(request, "user_id")
    data = _user_data(await _form(request))
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


@require("admin")
async def user_delete(request: web.Request) -> web.StreamResponse:
    target = match_id(request, "user_id")
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


@require("admin")
async def settings_page(request: web.Request) -> web.StreamResponse:
    """What this appliance runs with: the configuration as loaded (secrets masked) and the certificate's fingerprint.
    Changed in the file (``vmond check-config``, then a restart), not here."""
    config = request.app[SERVICES].config  # current: a SIGHUP reload may have changed its accounts
    certificate = config.web.tls.certificate
    loop = asyncio.get_running_loop()
    fingerprint_text = (await loop.run_in_executor(None, fingerprint, certificate)) if certificate else None
    return render(request, "settings.html", {"config_text": dump_masked(config), "source": config.source,
                                             "fingerprint": fingerprint_text})
