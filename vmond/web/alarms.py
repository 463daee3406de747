"""Alarm tickets over the API and as pages: raise from an event, acknowledge, notes, resolve, list and search.

Guards work alarms (raise, acknowledge, note, resolve, the list of open ones); the history (resolved alarms,
search) is for supervisors. Every change goes through the seam (:mod:`vmond.store.changes`), which publishes it
live (alarm.created / alarm.updated, and event.updated for the event that became an alarm).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from vmond.store.alarms import (
    RESOLUTION_CODES,
    STATES,
    AlarmConflict,
    AlarmInvalid,
    AlarmNotFound,
    acknowledge,
    add_note,
    alarm_detail,
    list_alarms,
    raise_alarm,
    resolve,
    resolved_by_user,
    tick_step,
)
from vmond.store.cameras import camera_source
from vmond.store.events import EventNotFound, StatusConflict
from vmond.util import auth
from vmond.web.bodies import BodyError, form_fields, json_object
from vmond.web.keys import BUS, CHANGES, DB, SERVICES, config_of
from vmond.web.params import parse_id, path_id
from vmond.web.remote import Sent, alarm_command, event_command, with_commands
from vmond.web.render import render
from vmond.web.scope import scope_of
from vmond.web.security import json_error, principal, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


def _user_id(request: web.Request) -> int:
    who = principal(request)
    assert who is not None
    return int(who["user_id"])


async def _raise(request: web.Request) -> tuple[dict[str, Any], bool]:
    if (sent := await event_command(request, "alarm")) is not None:  # a site's event, on a central: a command
        return sent, False
    async with request.app[CHANGES].batch() as batch:  # announced as one alarm.created, showing who took it
        alarm, _, created = await batch.record(raise_alarm, config_of(request.app).smtp.domain,
                                               path_id(request, "event_id"), _user_id(request))
        if created:
            # The guard who raises it handles it, until someone takes it over.
            alarm = await batch.record(acknowledge, alarm["id"], _user_id(request))
    if created:
        live = request.app[SERVICES].live
        if live is not None:  # the camera's picture at this moment, taken in the background (live.snapshot_on_alarm)
            live.snapshot_for_alarm(alarm["id"], (alarm.get("camera") or {}).get("id"))
    return alarm, created


@routes.post("/api/events/{event_id}/alarm")
@require("guard")
async def api_raise(request: web.Request) -> web.Response:
    try:
        alarm, created = await _raise(request)
    except EventNotFound:
        return json_error(404, "no such event")
    except StatusConflict as exc:
        return json_error(409, str(exc))
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)
    return web.json_response(alarm, status=202 if isinstance(alarm, Sent) else 201 if created else 200)


def _history_filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    filters: dict[str, Any] = {"query": query.get("q", "").strip()[:100]}
    try:
        for name, key in (("account_id", "account"), ("camera_id", "camera")):
            if query.get(key):
                if (value := parse_id(query[key])) is None:
                    raise ValueError(key)
                filters[name] = value
        if query.get("from"):
            filters["since"] = datetime.fromisoformat(query["from"]).astimezone()
        if query.get("to"):
            # A date "to" includes that whole day.
            until = datetime.fromisoformat(query["to"])
            filters["until"] = (until + timedelta(days=1) if len(query["to"]) == 10 else until).astimezone()
    except (ValueError, OverflowError):  # also a date so near the ends of time that the time zone overflows it
        raise web.HTTPBadRequest(text="account and camera are ids; from and to are dates (YYYY-MM-DD)") from None
    return filters


async def _list(request: web.Request) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    state = request.query.get("state", "open")
    if state not in (*STATES, "all"):
        raise web.HTTPBadRequest(text=f"state must be one of {', '.join((*STATES, 'all'))}")
    filters = _history_filters(request)
    who = principal(request)
    history = state in ("resolved", "all") or any(filters.get(k) for k in filters)
    if history and not (who and auth.role_allows(who["role"], "supervisor")):
        if state == "resolved" and not any(filters.values()):
            return state, await _own_shift(request), filters
        raise web.HTTPForbidden(text="the alarm history needs the supervisor role")
    return state, await request.app[DB].read(list_alarms, state, limit=200, scope=scope_of(request), **filters), filters


# --- a guard's own shift (issue 16): "resolved" shows a guard the alarms they resolved in the last 12 hours -------
OWN_SHIFT = timedelta(hours=12)


async def _own_shift(request: web.Request) -> list[dict[str, Any]]:
    since = datetime.now(UTC) - OWN_SHIFT
    return await request.app[DB].read(resolved_by_user, _user_id(request), since, limit=200, scope=scope_of(request))


@routes.get("/api/alarms")
@require("guard")
async def api_list(request: web.Request) -> web.Response:
    try:
        _, alarms, _ = await _list(request)
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)
    return web.json_response({"alarms": alarms})


async def _detail(request: web.Request) -> dict[str, Any]:
    try:
        return await request.app[DB].read(alarm_detail, config_of(request.app).smtp.domain,
                                          path_id(request, "alarm_id"))
    except AlarmNotFound:
        raise web.HTTPNotFound() from None


@routes.get("/api/alarms/{alarm_id}")
@require("guard")
async def api_detail(request: web.Request) -> web.Response:
    try:
        return web.json_response(await with_commands(request, "alarm", await _detail(request)))
    except web.HTTPNotFound:
        return json_error(404, "no such alarm")


async def _change(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an alarm change (the seam publishes the alarm's new state). Raises HTTP errors with a message."""
    alarm_id = path_id(request, "alarm_id")
    try:
        # On a central, a site's alarm: the change is checked as here and sent to the site (vmond.web.remote).
        result = await alarm_command(request, fn, *args, **kwargs)
        if result is None:
            result = await request.app[CHANGES].record(fn, alarm_id, _user_id(request), *args, **kwargs)
    except AlarmNotFound as exc:  # the alarm (its id), or a part of it (a sentence: "the alarm has no step 9")
        raise web.HTTPNotFound(text=exc.args[0] if exc.args and isinstance(exc.args[0], str)
                               else "no such alarm") from None
    except AlarmConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except AlarmInvalid:
        raise  # answered with its fields: by _api as JSON, by the form as the page with the errors
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return result


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        return await json_object(request)
    except BodyError as exc:
        raise exc.http() from None


async def _api(request: web.Request, status: int, fn: Any, *args: Any, **kwargs: Any) -> web.Response:
    try:
        result = await _change(request, fn, *args, **kwargs)
        return web.json_response(result, status=202 if isinstance(result, Sent) else status)
    except AlarmInvalid as exc:
        return web.json_response({"error": str(exc), "fields": exc.fields}, status=400)
    except web.HTTPException as exc:
        return json_error(exc.status, exc.text or exc.reason)


@routes.post("/api/alarms/{alarm_id}/notes")
@require("guard")
async def api_note(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return await _api(request, 201, add_note, str(body.get("text", "")))


@routes.post("/api/alarms/{alarm_id}/acknowledge")
@require("guard")
async def api_acknowledge(request: web.Request) -> web.Response:
    return await _api(request, 200, acknowledge)


@routes.post("/api/alarms/{alarm_id}/resolve")
@require("guard")
async def api_resolve(request: web.Request) -> web.Response:
    body = await _json_body(request)
    # "text" as well: the field a resolve command and the 400 for a missing text name
    text = body.get("resolution") or body.get("text") or ""
    return await _api(request, 200, resolve, str(body.get("code") or ""), str(text),
                      require_code=_code_required(request))


def _code_required(request: web.Request) -> bool:
    return config_of(request.app).alarms.require_resolution_code


@routes.post("/api/alarms/{alarm_id}/steps/{n}")
@require("guard")
async def api_step(request: web.Request) -> web.Response:
    """Tick step *n* of the alarm's action plan (done by the caller, now); answers the Alarm."""
    return await _api(request, 200, tick_step, path_id(request, "n"))


# --- pages and their forms (the same changes, for browsers; every form carries the CSRF token) -------------------


@routes.get("/alarms")
@require("guard")
async def page_list(request: web.Request) -> web.StreamResponse:
    seq = request.app[BUS].last_seq  # before reading: what changes meanwhile comes over /ws (alarms.js)
    state, alarms, filters = await _list(request)
    return render(request, "alarms.html", {"alarms": alarms, "state": state, "filters": request.query, "seq": seq})


@routes.get("/alarms/{alarm_id}")
@require("guard")
async def page_detail(request: web.Request) -> web.StreamResponse:
    return await _detail_page(request)


async def _detail_page(request: web.Request, errors: dict[str, str] | None = None,
                       typed: dict[str, str] | None = None) -> web.Response:
    """The alarm page; with *errors* (and the form as *typed*) after a resolve that was refused."""
    seq = request.app[BUS].last_seq
    alarm = await with_commands(request, "alarm", await _detail(request))
    live = request.app[SERVICES].live
    source = await request.app[DB].read(camera_source, alarm["camera"]["id"]) if alarm["camera"] else None
    return render(request, "alarm.html", {
        "alarm": alarm, "seq": seq, "errors": errors or {}, "typed": typed or {},
        "codes": RESOLUTION_CODES, "require_code": _code_required(request),
        "next_alarm": await _next_open(request, alarm["id"]),
        "live_camera": alarm["camera"] if live is not None and source is not None and source[1] else None,
        "snapshot_pending": live is not None and alarm["id"] in live.pending_alarm_snapshots},
        status=400 if errors else 200)


async def _next_open(request: web.Request, current: int) -> dict[str, Any] | None:
    """The open alarm to work after this one: the oldest that nobody else is handling, else the oldest."""
    me = _user_id(request)
    others = [a for a in await request.app[DB].read(list_alarms, "open", limit=200) if a["id"] != current]
    free = [a for a in others if a["acknowledged_by"] is None or a["acknowledged_by"]["id"] == me]
    return min(free or others, key=lambda a: (a["opened_at"], a["id"]), default=None)


def _back(request: web.Request, fragment: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/alarms/{path_id(request, 'alarm_id')}{fragment}")


@routes.post("/events/{event_id}/alarm")
@require("guard")
async def form_raise(request: web.Request) -> web.StreamResponse:
    try:
        alarm, _ = await _raise(request)
    except EventNotFound:
        raise web.HTTPNotFound() from None
    except StatusConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    if isinstance(alarm, Sent):  # sent to the site: the alarm appears once the site has raised it
        raise web.HTTPSeeOther(f"/events/{path_id(request, 'event_id')}")
    raise web.HTTPSeeOther(f"/alarms/{alarm['id']}")


@routes.post("/alarms/{alarm_id}/notes")
@require("guard")
async def form_note(request: web.Request) -> web.StreamResponse:
    await _change(request, add_note, (await form_fields(request)).get("text", ""))
    raise _back(request, "#notes")


@routes.post("/alarms/{alarm_id}/acknowledge")
@require("guard")
async def form_acknowledge(request: web.Request) -> web.StreamResponse:
    await _change(request, acknowledge)
    raise _back(request)


@routes.post("/alarms/{alarm_id}/steps/{n}")
@require("guard")
async def form_step(request: web.Request) -> web.StreamResponse:
    await _change(request, tick_step, path_id(request, "n"))
    raise _back(request, "#steps")


@routes.post("/alarms/{alarm_id}/resolve")
@require("guard")
async def form_resolve(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    try:
        await _change(request, resolve, form.get("code", ""), form.get("resolution", ""),
                      require_code=_code_required(request))
    except AlarmInvalid as exc:  # shown next to the form's fields, with what was typed kept
        return await _detail_page(request, {"resolution" if k == "text" else k: v for k, v in exc.fields.items()},
                                  {"code": form.get("code", ""), "resolution": form.get("resolution", "")})
    raise _back(request)
