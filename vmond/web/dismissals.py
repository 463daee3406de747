"""Dismiss made safe: bulk dismiss and restore over the API, the Dismiss and Restore buttons of the pages, and the
supervisors' page of dismissed events.

The rule who may restore lives in the store (:func:`vmond.store.dismissals.restore_event`): a supervisor any
dismissed event, a guard only the one they dismissed in the last seconds (the wall's undo). Every change goes
through the seam, which tells every wall live (``event.dismissed``, or ``event.updated`` back to ``active``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from vmond.store.dismissals import MAX_BULK, RestoreRefused, dismiss_events, list_dismissed, restore_event
from vmond.store.events import EventNotFound, StatusConflict, set_status
from vmond.store.scope import visible_event_ids
from vmond.util import auth
from vmond.web.bodies import BodyError, form_fields, json_object
from vmond.web.keys import CHANGES, DB, config_of
from vmond.web.params import MAX_ID, path_id
from vmond.web.remote import dismiss_many, event_command
from vmond.web.render import render
from vmond.web.reports import site_zone
from vmond.web.scope import scope_of
from vmond.web.security import json_error, principal, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


def _who(request: web.Request) -> tuple[int, bool]:
    """The caller's user id, and whether they are a supervisor (or more)."""
    who = principal(request)
    assert who is not None
    return int(who["user_id"]), auth.role_allows(who["role"], "supervisor")


def _ids(body: dict[str, Any]) -> list[int]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise ValueError("ids must be a non-empty list of event ids")
    if len(ids) > MAX_BULK:
        raise ValueError(f"at most {MAX_BULK} ids at once")
    if not all(type(i) is int and 0 < i <= MAX_ID for i in ids):  # bool is an int to Python, not an id
        raise ValueError("ids must be event ids (positive whole numbers)")
    return ids


@routes.post("/api/events/dismiss")
@require("guard")
async def api_dismiss_many(request: web.Request) -> web.Response:
    try:
        ids = _ids(await json_object(request))
    except BodyError as exc:
        return exc.response()
    except ValueError as exc:
        return json_error(400, str(exc))
    scope = scope_of(request)
    # Another account's event is skipped as unknown, exactly like one that does not exist.
    visible = set(await request.app[DB].read(visible_event_ids, scope, ids)) if scope.limited else set(ids)
    # On a central, a site's events are sent to it as commands (answered 202 with them).
    local, not_sent, commands = await dismiss_many(request, [i for i in dict.fromkeys(ids) if i in visible])
    dismissed, skipped = await request.app[CHANGES].record(dismiss_events, config_of(request.app).smtp.domain,
                                                          local, _who(request)[0])
    skipped += not_sent + [{"id": i, "reason": "unknown"} for i in dict.fromkeys(ids) if i not in visible]
    if commands:
        return web.json_response({"dismissed": dismissed, "skipped": skipped, "commands": commands}, status=202)
    return web.json_response({"dismissed": dismissed, "skipped": skipped})


async def _restore(request: web.Request) -> dict[str, Any]:
    """Restore the path's event (on a central, a site's: sent as a command, see vmond.web.remote); HTTP errors
    with a message for what may not be."""
    if (sent := await event_command(request, "restore")) is not None:
        return sent
    user_id, supervisor = _who(request)
    try:
        event, _ = await request.app[CHANGES].record(restore_event, config_of(request.app).smtp.domain,
                                                     path_id(request, "event_id"), user_id, supervisor)
    except EventNotFound:
        raise web.HTTPNotFound(text="no such event") from None
    except RestoreRefused as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except StatusConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return event


@routes.post("/api/events/{event_id}/restore")
@require("guard")  # supervisors, and the guard who dismissed it within the undo window (checked in the store)
async def api_restore(request: web.Request) -> web.Response:
    try:
        restored = await _restore(request)
        return web.json_response(restored, status=202 if "command" in restored else 200)
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)


@routes.post("/events/{event_id}/dismiss")
@require("guard")
async def form_dismiss(request: web.Request) -> web.StreamResponse:
    event_id = path_id(request, "event_id")
    if await event_command(request, "dismiss") is not None:  # a site's event, on a central
        raise web.HTTPSeeOther(f"/events/{event_id}")
    try:
        await request.app[CHANGES].record(set_status, config_of(request.app).smtp.domain, event_id, "dismissed",
                                          _who(request)[0])
    except EventNotFound:
        raise web.HTTPNotFound() from None
    except StatusConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    raise web.HTTPSeeOther(f"/events/{event_id}")


def _dates(query: Any) -> dict[str, str]:
    """The page's date filter (``from``, ``to``: YYYY-MM-DD), checked; 400 for anything else."""
    dates = {}
    for name in ("from", "to"):
        value = (query.get(name) or "").strip()
        if value:
            try:
                datetime.strptime(value, "%Y-%m-%d")
            except ValueError:
                raise web.HTTPBadRequest(text="from and to are dates (YYYY-MM-DD)") from None
            dates[name] = value
    return dates


@routes.post("/events/{event_id}/restore")
@require("guard")
async def form_restore(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    await _restore(request)
    if form.get("back") == "dismissed":
        dates = _dates(form)
        raise web.HTTPSeeOther("/dismissed" + ("?" + urlencode(dates) if dates else ""))
    raise web.HTTPSeeOther(f"/events/{path_id(request, 'event_id')}")


def _day_start(date: str, zone: tzinfo | None) -> datetime:
    """Midnight of *date* in *zone* (None: the system's time zone)."""
    day = datetime.fromisoformat(date)
    return day.replace(tzinfo=zone) if zone is not None else day.astimezone()


@routes.get("/dismissed")
@require("supervisor")
async def dismissed_page(request: web.Request) -> web.StreamResponse:
    dates = _dates(request.query)
    try:
        # Days in the site's time zone, as the report has them; "to" includes that whole day.
        zone = site_zone(request.app)
        since = _day_start(dates["from"], zone) if "from" in dates else None
        until = _day_start(dates["to"], zone) + timedelta(days=1) if "to" in dates else None
    except (ValueError, OverflowError):  # a date at the ends of time that the time zone overflows
        raise web.HTTPBadRequest(text="from and to are dates (YYYY-MM-DD)") from None
    events = await request.app[DB].read(list_dismissed, config_of(request.app).smtp.domain, since, until, 200,
                                        scope_of(request))
    return render(request, "dismissed.html", {"events": events, "dates": dates})
