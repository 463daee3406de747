"""Schedules and snooze over the web (issue 17): a supervisor arms or disarms an account by hand, or snoozes a
camera, over the API (``POST /api/accounts/{id}/arm|disarm``, ``POST /api/cameras/{id}/snooze|unsnooze``, each
with ``{"until", "reason"}``) and from the account and camera pages; and ``monitoring`` (monitored now, until
when), which needs the site's time zone, added to the account the API and the page show.

``until`` is an ISO 8601 time (with an offset, or without one in ``site.timezone``) or a duration from now
(``2h``, ``30m``); it must lie ahead. A snooze lasts at most ``supervision.max_snooze``, and that long without one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from vmond.config import format_duration, parse_duration
from vmond.store import accounts as store
from vmond.store.arming import set_monitoring, snooze
from vmond.store.monitoring import monitoring_log
from vmond.util.clock import utcnow
from vmond.web.admin import answer, json_object, site_config_changed, user_id, with_monitoring
from vmond.web.bodies import form_fields
from vmond.web.keys import CHANGES, DB, config_of
from vmond.web.params import path_id
from vmond.web.security import require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them
MAX_REASON = 200
MAX_AHEAD = timedelta(days=366)  # the furthest end an arm, disarm or snooze may name


def parse_until(value: Any, zone: str, now: datetime) -> datetime | None:
    """The end a request names (None: none); ValueError with the message for the ``until`` field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a time (ISO 8601, e.g. 2026-12-24T18:00) or a duration from now (e.g. 2h)")
    try:
        seconds = parse_duration(value.strip())
    except ValueError:
        pass
    else:
        return _ahead(now + timedelta(seconds=min(seconds, MAX_AHEAD.total_seconds() + 1)), now)
    try:
        until = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is neither a time (ISO 8601, e.g. 2026-12-24T18:00) nor a duration "
                         "(e.g. 2h)") from None
    return _ahead(until if until.tzinfo is not None else until.replace(tzinfo=ZoneInfo(zone)), now)


def _ahead(until: datetime, now: datetime) -> datetime:
    if until <= now:
        raise ValueError("must lie in the future")
    if until - now > MAX_AHEAD:  # a manual state for longer is a configuration matter (the schedule)
        raise ValueError("at most a year from now")
    return until


def _reason(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value.strip()) > MAX_REASON:
        raise ValueError(f"text of at most {MAX_REASON} characters")
    return value.strip()


def _checked(data: dict[str, Any], zone: str, max_until: float | None = None) -> tuple[datetime | None, str]:
    """``until`` and ``reason`` of a request; :class:`store.Invalid` naming the field that is wrong."""
    now = utcnow()
    errors: dict[str, str] = {}
    until = reason = None
    try:
        until = parse_until(data.get("until"), zone, now)
    except ValueError as exc:
        errors["until"] = str(exc)
    if max_until is not None and until is not None and until > now + timedelta(seconds=max_until + 1):
        errors["until"] = f"at most {format_duration(max_until)} from now (supervision.max_snooze)"
    try:
        reason = _reason(data.get("reason"))
    except ValueError as exc:
        errors["reason"] = str(exc)
    if errors:
        raise store.Invalid(errors)
    if max_until is not None and until is None:
        until = now + timedelta(seconds=max_until)
    return until, reason or ""


# --- API ------------------------------------------------------------------------------------------------------


async def _arm(request: web.Request, monitored: bool, data: dict[str, Any]) -> dict[str, Any]:
    config = config_of(request.app)
    until, reason = _checked(data, config.site.timezone)
    account = await request.app[CHANGES].record(set_monitoring, config.smtp.domain, path_id(request, "account_id"),
                                                monitored, until, reason, user_id(request))
    await site_config_changed(request.app)
    return with_monitoring(request, account)


@routes.post("/api/accounts/{account_id}/arm")
@require("supervisor")
async def account_arm(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: _arm(request, True, data))


@routes.post("/api/accounts/{account_id}/disarm")
@require("supervisor")
async def account_disarm(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: _arm(request, False, data))


async def _snooze(request: web.Request, data: dict[str, Any] | None) -> dict[str, Any]:
    config = config_of(request.app)
    until, reason = (None, "") if data is None else _checked(data, config.site.timezone,
                                                             config.supervision.max_snooze)
    camera = await request.app[CHANGES].record(snooze, config.smtp.domain, path_id(request, "camera_id"), until,
                                               reason, user_id(request))
    await site_config_changed(request.app)
    return camera


@routes.post("/api/cameras/{camera_id}/snooze")
@require("supervisor")
async def camera_snooze(request: web.Request) -> web.Response:
    data = await json_object(request)
    return await answer(lambda: _snooze(request, data))


@routes.post("/api/cameras/{camera_id}/unsnooze")
@require("supervisor")
async def camera_unsnooze(request: web.Request) -> web.Response:
    return await answer(lambda: _snooze(request, None))


# --- pages ----------------------------------------------------------------------------------------------------


async def account_page_context(request: web.Request, account: dict[str, Any]) -> dict[str, Any]:
    """What the account page shows of monitoring: the state now, and the latest manual arms and disarms."""
    if account.get("id") is None:
        return {}
    zone = config_of(request.app).site.timezone
    state = with_monitoring(request, account)["monitoring"]
    return {"monitoring": state, "monitoring_until": local_time(state["until"], zone),
            "monitoring_log": [{**entry, "at_local": local_time(entry["at"], zone),
                                "until_local": local_time(entry["until"], zone)}
                               for entry in await request.app[DB].read(monitoring_log, account["id"])],
            "timezone": zone}


def max_snooze(request: web.Request) -> str:
    """``supervision.max_snooze`` as the camera page's snooze form offers it."""
    return format_duration(config_of(request.app).supervision.max_snooze)


def local_time(iso: str | None, zone: str) -> str:
    """An ISO time as a guard reads it, in the site's zone: ``Thu 24 Dec 2026 18:00 CET``."""
    if iso is None:
        return ""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(zone)).strftime("%a %d %b %Y %H:%M %Z")


async def _form_change(request: web.Request, call: Any, back: str) -> web.StreamResponse:
    try:
        await call()
    except store.Invalid as exc:
        raise web.HTTPBadRequest(text="; ".join(f"{k}: {v}" for k, v in exc.fields.items())) from None
    except store.NotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther(back)


@routes.post("/accounts/{account_id}/arm")
@routes.post("/accounts/{account_id}/disarm")
@require("supervisor")
async def account_arm_form(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    monitored = request.path.endswith("/arm")
    return await _form_change(request, lambda: _arm(request, monitored, form),
                              f"/accounts/{path_id(request, 'account_id')}")


@routes.post("/cameras/{camera_id}/snooze")
@routes.post("/cameras/{camera_id}/unsnooze")
@require("supervisor")
async def camera_snooze_form(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    data = None if request.path.endswith("/unsnooze") else form
    return await _form_change(request, lambda: _snooze(request, data), f"/cameras/{path_id(request, 'camera_id')}")
