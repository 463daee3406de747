"""The shift handover report for supervisors: a page with server-rendered charts, and the same as JSON or CSV.

``GET /api/reports/alarms?from=&to=&format=json|csv`` and ``GET /reports?from=&to=``. *from* and *to* are dates
(``2026-12-06``: a whole day, *to* included) or date-times (``2026-12-06T20:00``) in the site's time zone, or
carry their own offset; without them the report covers the last 12 hours (a shift). One report spans at most
:data:`MAX_REPORT_RANGE`. The CSV has one row per alarm; its cells are quoted as RFC 4180 has it and any text
a spreadsheet would take for a formula is defused (OWASP's "CSV injection": a leading ``'``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from vmond.store.reports import alarm_report
from vmond.web.charts import Chart, bar_chart
from vmond.web.keys import DB, config_of
from vmond.web.render import render
from vmond.web.scope import scope_of
from vmond.web.security import json_error, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

SHIFT = timedelta(hours=12)  # the report's period when none is asked for: the last shift
MAX_REPORT_RANGE = timedelta(days=7)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets may read as the start of a formula
CSV_COLUMNS = (
    "alarm_id", "event_id", "state", "account", "camera", "camera_source", "kind", "event_type", "received_at",
    "raised_at", "raised_by", "acknowledged_at", "handled_by", "resolved_at", "resolved_by", "outcome_code",
    "outcome", "outcome_text", "seconds_to_raise", "seconds_to_resolve", "notes", "steps",
)


class RangeError(ValueError):
    """The period asked for is not one (a bad date, *from* not before *to*, or longer than allowed)."""


def site_zone(app: web.Application) -> tzinfo | None:
    """The site's time zone (``site.timezone`` where the configuration has one), else None: the system's."""
    name = getattr(config_of(app).site, "timezone", None)
    return ZoneInfo(name) if name else None


def _instant(text: str, zone: tzinfo | None, end: bool) -> datetime:
    value = datetime.fromisoformat(text)
    if len(text) == 10 and end:
        value += timedelta(days=1)  # a date as "to" includes that whole day
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone) if zone is not None else value.astimezone()
    return value


def report_range(query: Any, zone: tzinfo | None, now: datetime) -> tuple[datetime, datetime]:
    """[from, to) from the query string; raises RangeError with a message for people."""
    try:
        until = _instant(query["to"], zone, end=True) if query.get("to") else now
        since = _instant(query["from"], zone, end=False) if query.get("from") else until - SHIFT
    except (ValueError, OverflowError):
        raise RangeError("from and to are dates (YYYY-MM-DD) or date-times (YYYY-MM-DDTHH:MM)") from None
    if since >= until:
        raise RangeError("from must be before to")
    if until - since > MAX_REPORT_RANGE:
        raise RangeError(f"a report covers at most {MAX_REPORT_RANGE.days} days")
    return since, until


async def _report(request: web.Request) -> dict[str, Any]:
    zone = site_zone(request.app)
    since, until = report_range(request.query, zone, datetime.now().astimezone(zone))
    report = await request.app[DB].read(alarm_report, since, until, scope_of(request))
    site = config_of(request.app).site
    report["site"] = {"id": site.id, "name": site.name}
    report["time_zone"] = str(zone) if zone is not None else (since.astimezone().tzname() or "")
    return report


def defuse(value: object) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP: prefix such text with a single quote)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _step_line(step: dict[str, Any]) -> str:
    """An action-plan step as "2. Call the keyholder (done by ann at ...)" or "(not done)"."""
    who = step.get("done_by")
    name = who.get("username", "") if isinstance(who, dict) else who
    done = f"done by {name or '?'} at {step.get('done_at')}" if step.get("done_at") else "not done"
    return f"{step.get('n', '')}. {step.get('text', '')} ({done})"


def _csv_row(alarm: dict[str, Any]) -> list[str]:
    def name(who: dict[str, Any] | None) -> str:
        return who["username"] if who else ""

    outcome = alarm["resolution"] or {}
    notes = "\n".join(f"{n['created_at']} {n['author'] or ''}: {n['text']}" for n in alarm["notes"])
    steps = "\n".join(_step_line(step) for step in alarm["steps"])
    values = (
        alarm["id"], alarm["event_id"], alarm["state"], (alarm["account"] or {}).get("name"),
        (alarm["camera"] or {}).get("name"), " ".join(filter(None, (alarm["camera_name"], alarm["channel"]))),
        alarm["kind"], alarm["event_type"], alarm["received_at"], alarm["opened_at"], name(alarm["opened_by"]),
        alarm["acknowledged_at"], name(alarm["acknowledged_by"]), alarm["resolved_at"], name(alarm["resolved_by"]),
        outcome.get("code"), outcome.get("label"), outcome.get("text"), alarm["seconds_to_raise"],
        alarm["seconds_to_resolve"], notes, steps,
    )
    return [defuse(v) for v in values]


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180: CRLF, fields with quotes, commas or lines quoted
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_row(alarm) for alarm in report["alarms"])
    return out.getvalue()


@routes.get("/api/reports/alarms")
@require("supervisor")
async def api_report(request: web.Request) -> web.StreamResponse:
    form = request.query.get("format", "json")
    if form not in ("json", "csv"):
        return json_error(400, "format must be json or csv")
    try:
        report = await _report(request)
    except RangeError as exc:
        return json_error(400, str(exc))
    if form == "json":
        return web.json_response(report)
    stamp = "%Y%m%dT%H%M"
    filename = (f"vmond-alarms-{report['site']['id']}-{datetime.fromisoformat(report['from']).strftime(stamp)}-"
                f"{datetime.fromisoformat(report['to']).strftime(stamp)}.csv")
    return web.Response(text=report_csv(report), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# --- the page -----------------------------------------------------------------------------------------------------


def _local(zone: tzinfo | None) -> Callable[..., str]:
    def local(iso: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "—" if not iso else datetime.fromisoformat(iso).astimezone(zone).strftime(fmt)

    return local


def _charts(report: dict[str, Any], local: Callable[..., str]) -> list[Chart]:
    hours = report["per_hour"]
    labels = [local(h["hour"], "%a %H:%M" if n == 0 or local(h["hour"], "%H") == "00" else "%H:%M")
              for n, h in enumerate(hours)]
    handle = report["time_to_handle"]
    return [
        bar_chart("Events and alarms per hour", labels,
                  [("Events", [h["events"] for h in hours]), ("Alarms", [h["alarms"] for h in hours])],
                  x_title=f"hour starting ({report['time_zone']})", y_title="count"),
        bar_chart("Time to handle (event received to alarm resolved)", [row["bucket"] for row in handle],
                  [("Alarms", [row["alarms"] for row in handle])], x_title="time to handle", y_title="alarms"),
    ]


@routes.get("/reports")
@require("supervisor")
async def page_report(request: web.Request) -> web.StreamResponse:
    try:
        report = await _report(request)
    except RangeError as exc:
        return render(request, "reports.html", {"report": None, "error": str(exc), "filters": request.query},
                      status=400)
    local = _local(site_zone(request.app))
    return render(request, "reports.html", {
        "report": report, "charts": _charts(report, local), "local": local, "filters": request.query,
        "form_from": local(report["from"], "%Y-%m-%dT%H:%M"), "form_to": local(report["to"], "%Y-%m-%dT%H:%M"),
        "csv_query": f"from={local(report['from'], '%Y-%m-%dT%H:%M')}&to={local(report['to'], '%Y-%m-%dT%H:%M')}"})
