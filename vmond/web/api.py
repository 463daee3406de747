"""The JSON API under ``/api/``: health, events, and what the installer needs to see about SMTP."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vmond.store.alarmtrail import event_with_trail
from vmond.store.events import STATUSES, EventNotFound, StatusConflict, list_events, list_queue, set_status
from vmond.store.outbox import stats as outbox_stats
from vmond.store.refusals import list_refusals
from vmond.util.metrics import exposition
from vmond.util.version import VERSION
from vmond.web.keys import CHANGES, CONNECTIONS, DB, HOSTS, IO, SERVICES, WS_CLIENTS, config_of
from vmond.web.params import path_id, query_int
from vmond.web.remote import api_event_command, with_commands
from vmond.web.scope import scope_of
from vmond.web.security import json_error, principal, public, require

if TYPE_CHECKING:
    from vmond.config import Config

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

MAX_LIMIT = 500


@routes.get("/api/health")
@public
async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    config = config_of(request.app)
    loop = asyncio.get_running_loop()
    disk = await loop.run_in_executor(request.app[IO], shutil.disk_usage, services.spool.root)
    spooled = await loop.run_in_executor(request.app[IO], services.spool.count_pending)
    try:
        async with asyncio.timeout(5):
            db_latency = await services.db.ping()
        db_state: dict[str, Any] = {"ok": True, "write_latency_ms": round(db_latency * 1000, 1)}
    except (TimeoutError, Exception) as exc:  # noqa: BLE001 - health reports, never raises
        db_state = {"ok": False, "error": type(exc).__name__}
    db_state.update(services.db.status())
    low_disk = disk.free < config.storage.min_free_space or services.ingest.refusing_for_space()
    status = "ok" if db_state["ok"] and not low_disk else "degraded"
    body = {
        "status": status,
        "version": VERSION,
        "uptime_s": round(time.monotonic() - services.started_at, 1),
        "site": {"id": config.site.id, "name": config.site.name},
        "database": db_state,
        "disk": {"free_bytes": disk.free, "total_bytes": disk.total, "min_free_bytes": config.storage.min_free_space,
                 "low": low_disk, "media_quota_bytes": config.storage.max_media_size,
                 "media_bytes": services.media.usage.bytes if services.media.usage.measured else None,
                 "freed_bytes": services.disk.freed_bytes if services.disk else 0},
        "queues": {"spool_pending": spooled, "live_clients": services.bus.subscriber_count},
        "smtp": {"listening": services.smtp is not None, "accepted": services.ingest.accepted,
                 "recipients_refused": services.ingest.refused, "cameras": len(services.cameras)},
        "pipeline": {"processed": services.pipeline.processed, "failed": services.pipeline.failed},
        "web": {**request.app[CONNECTIONS].status(), "wrong_host_refused": request.app[HOSTS].refused},
        "clips": {"queued": services.clips.queued if services.clips else 0,
                  "skipped": services.clips.skipped if services.clips else 0,
                  "made": services.metrics.clip_count, "failed": services.metrics.clip_failures},
        "mqtt": (services.mqtt.status() if services.mqtt is not None
                 # a central node where another node holds duty:outbox (see "cluster")
                 else {"enabled": True, "connected": False, "elsewhere": True} if services.node is not None
                 else {"enabled": False, "connected": False}),
        "notifications": services.notifications.status() if services.notifications is not None else None,
        "central": services.mirror.status() if services.mirror is not None else None,  # a central's sites in
        # A central node (issue 19): its name, the duties it runs, and who holds each lease.
        "cluster": await _cluster(services),
        "bridge": services.bridge.status() if services.bridge is not None else None,  # the other central nodes
    }
    return web.json_response(body)


async def _cluster(services: Any) -> dict[str, Any] | None:
    if services.node is None:
        return None
    try:
        async with asyncio.timeout(5):
            return dict(await services.node.status())
    except (TimeoutError, Exception) as exc:  # noqa: BLE001 - health reports, never raises
        return {"node": services.node.name, "error": type(exc).__name__}


@routes.get("/api/events")
@require("guard")
async def events_list(request: web.Request) -> web.Response:
    status = request.query.get("status", "active")
    if status not in (*STATUSES, "all"):
        return json_error(400, f"status must be one of {', '.join((*STATUSES, 'all'))}")
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    include_tests = request.query.get("include_tests") in ("1", "true", "yes")
    if request.query.get("order", "newest") not in ("newest", "queue"):
        return json_error(400, "order must be newest or queue")
    site = request.query.get("site") or None  # on a central: one site's events only
    if request.query.get("order") == "queue":
        return await _queue(request, status, limit, site)
    events = await request.app[DB].read(list_events, config_of(request.app).smtp.domain, status, limit, include_tests,
                                        scope_of(request), site)
    return web.json_response({"events": events})


async def _queue(request: web.Request, status: str, limit: int, site: str | None) -> web.Response:
    """``order=queue``: the wall's queue (active events, no test mails), most urgent first, then oldest."""
    if status != "active":
        return json_error(400, "order=queue lists active events only")
    events = await request.app[DB].read(list_queue, config_of(request.app).smtp.domain, limit, scope_of(request),
                                        site)
    return web.json_response({"events": events})


@routes.get("/api/events/{event_id}")
@require("guard")
async def event_detail(request: web.Request) -> web.Response:
    try:
        event = await request.app[DB].read(event_with_trail, config_of(request.app).smtp.domain,
                                           path_id(request, "event_id"))
    except EventNotFound:
        return json_error(404, "no such event")
    return web.json_response(await with_commands(request, "event", event))


@routes.post("/api/events/{event_id}/dismiss")
@require("guard")
async def event_dismiss(request: web.Request) -> web.Response:
    if (sent := await api_event_command(request, "dismiss")) is not None:  # a site's event, on a central
        return sent
    who = principal(request)
    assert who is not None
    try:
        event, _ = await request.app[CHANGES].record(set_status, config_of(request.app).smtp.domain,
                                                   path_id(request, "event_id"), "dismissed", who["user_id"])
    except EventNotFound:
        return json_error(404, "no such event")
    except StatusConflict as exc:
        return json_error(409, str(exc))
    return web.json_response(event)


@routes.get("/api/smtp/refusals")
@require("supervisor")
async def smtp_refusals(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    if scope_of(request).limited:  # the SMTP door's diagnostics belong to no account: for unlimited users
        return web.json_response({"refusals": []})
    return web.json_response({"refusals": await request.app[DB].read(list_refusals, limit)})


async def _metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    loop = asyncio.get_running_loop()
    disk = await loop.run_in_executor(request.app[IO], shutil.disk_usage, services.spool.root)
    spooled = await loop.run_in_executor(request.app[IO], services.spool.count_pending)
    outbox = await services.db.read(outbox_stats)
    counters = services.metrics
    samples: list[tuple[str, str, str, dict[str, str], float]] = [
        ("vmond_up", "gauge", "1 while vmond runs", {"version": VERSION}, 1),
        ("vmond_smtp_mails_accepted_total", "counter", "Mails acknowledged with 250 after DATA", {},
         services.ingest.accepted),
        *[("vmond_smtp_replies_total", "counter", "SMTP replies sent, by reply code", {"code": code}, count)
          for code, count in sorted(counters.smtp_replies.items())],
        ("vmond_smtp_sessions", "gauge", "Open SMTP sessions", {},
         len(services.smtp.sessions) if services.smtp else 0),
        ("vmond_events_created_total", "counter", "Events created from mail", {}, counters.events_created),
        ("vmond_events_updated_total", "counter", "Mails that extended an open event", {}, counters.events_updated),
        ("vmond_pipeline_failed_total", "counter", "Spooled mails set aside after repeated failures", {},
         services.pipeline.failed),
        ("vmond_spool_pending", "gauge", "Accepted mails not yet turned into events", {}, spooled),
        ("vmond_clip_encode_seconds_sum", "counter", "Seconds spent encoding clips", {}, counters.clip_seconds_sum),
        ("vmond_clip_encode_seconds_count", "counter", "Clips encoded", {}, counters.clip_count),
        ("vmond_clip_failures_total", "counter", "Clips that could not be made", {}, counters.clip_failures),
        ("vmond_mqtt_outbox_depth", "gauge", "MQTT messages waiting for the broker", {}, outbox["depth"]),
        ("vmond_mqtt_connected", "gauge", "1 while connected to the MQTT broker", {},
         1 if services.mqtt is not None and services.mqtt.connected else 0),
        ("vmond_mqtt_dropped_total", "counter", "MQTT messages dropped by the outbox bounds", {},
         services.mqtt.dropped if services.mqtt is not None else 0),
        ("vmond_mqtt_outbox_oldest_seconds", "gauge", "Age of the oldest undelivered MQTT message", {},
         outbox["oldest_age_s"] or 0),
        ("vmond_websocket_clients", "gauge", "Open live connections (dashboards)", {},
         len(request.app[WS_CLIENTS])),
        ("vmond_disk_free_bytes", "gauge", "Free space on the data file system", {}, disk.free),
        ("vmond_disk_min_free_bytes", "gauge", "storage.min_free_space", {},
         config_of(request.app).storage.min_free_space),
    ]
    return web.Response(text=exposition(samples), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@require("guard")
async def metrics(request: web.Request) -> web.Response:
    return await _metrics(request)


@public
async def metrics_public(request: web.Request) -> web.Response:
    """``web.metrics_public: true``: for a Prometheus on the LAN that has no account here (numbers only)."""
    return await _metrics(request)


def metrics_route(config: Config) -> web.RouteDef:
    """``GET /metrics``: open to scrapers under ``web.metrics_public``, else for signed-in users."""
    return web.get("/metrics", metrics_public if config.web.metrics_public else metrics)
