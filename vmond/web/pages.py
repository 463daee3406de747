"""Server-rendered pages (the guard's wall) and media files served by id to signed-in users."""

from __future__ import annotations

import asyncio
import shutil

from aiohttp import web

from vmond.store.alarms import alarm_of_event, list_alarms
from vmond.store.alarmtrail import event_with_trail
from vmond.store.events import EventNotFound, list_queue, media_for_download
from vmond.store.monitoring import snoozed_count
from vmond.store.sites import site_choices
from vmond.store.users import user_count
from vmond.web.centralmedia import fetch_from_site, prefetch_pictures
from vmond.web.display import queue_context
from vmond.web.keys import BUS, DB, IO, MEDIA, SERVICES, config_of
from vmond.web.params import path_id
from vmond.web.remote import with_commands
from vmond.web.render import render
from vmond.web.scope import scope_of
from vmond.web.security import principal, public, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them


@routes.get("/")
@public
async def home(request: web.Request) -> web.StreamResponse:
    if principal(request) is None:
        first_run = await request.app[DB].read(user_count) == 0
        raise web.HTTPSeeOther("/setup" if first_run else "/login")
    return await wall(request)


@require("guard")
async def wall(request: web.Request) -> web.StreamResponse:
    # Take the sequence number before reading: anything published in between is replayed over /ws (the page
    # merges by event id), so nothing falls between the rendered list and the live stream.
    seq = request.app[BUS].last_seq
    central = config_of(request.app).central.enabled
    site = (request.query.get("site") or None) if central else None  # a central's wall of one site
    # The queue: most urgent first, then the longest waiting; rendered in that order before any script runs.
    events = await request.app[DB].read(list_queue, config_of(request.app).smtp.domain, 200, scope_of(request),
                                        site)
    disk = await asyncio.get_running_loop().run_in_executor(request.app[IO], shutil.disk_usage,
                                                            request.app[MEDIA].root)
    storage_low = (disk.free < config_of(request.app).storage.min_free_space
                   or request.app[SERVICES].ingest.refusing_for_space())
    # the open-alarms strip, of the user's accounts only
    open_alarms = await request.app[DB].read(list_alarms, "open", limit=200, scope=scope_of(request))
    snoozed = await request.app[DB].read(snoozed_count, scope_of(request))  # snooze: how many cameras are put aside
    sites = await request.app[DB].read(site_choices) if central else []
    return render(request, "wall.html", {"events": events, "seq": seq, "storage_low": storage_low,
                                         "open_alarms": open_alarms, "snoozed_cameras": snoozed,
                                         "sites": sites, "site_filter": site,
                                         **queue_context(config_of(request.app).events.escalate_after)})


@routes.get("/events/{event_id}")
@require("guard")
async def event_page(request: web.Request) -> web.StreamResponse:
    seq = request.app[BUS].last_seq  # before reading: what changes meanwhile comes over /ws (eventpage.js)
    try:
        event = await request.app[DB].read(event_with_trail, config_of(request.app).smtp.domain,
                                           path_id(request, "event_id"))
    except EventNotFound:
        raise web.HTTPNotFound() from None
    alarm_id = await request.app[DB].read(alarm_of_event, event["id"])
    event = await with_commands(request, "event", event)  # on a central, a site's event: what was sent to it
    central_media = request.app[SERVICES].central_media
    if central_media is not None and event.get("site"):  # its pictures fetched now, in one command
        await prefetch_pictures(central_media, event["id"], principal(request))
    return render(request, "event.html", {"event": event, "alarm_id": alarm_id, "seq": seq})


@routes.get("/media/{media_id}")
@require("guard")
async def media_file(request: web.Request) -> web.StreamResponse:
    return await _media(request, thumbnail=False)


@routes.get("/media/{media_id}/thumbnail")
@require("guard")
async def media_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _media(request, thumbnail=True)


async def _media(request: web.Request, thumbnail: bool) -> web.StreamResponse:
    media_id = path_id(request, "media_id")
    media = await request.app[DB].read(media_for_download, media_id)
    if media is None:
        raise web.HTTPNotFound()
    relpath = media["thumb_path"] if thumbnail else media["path"]
    central_media = request.app[SERVICES].central_media
    if central_media is not None:  # a central station: a site's file, fetched from the site unless cached
        relpath = await fetch_from_site(central_media, media_id, thumbnail, principal(request), relpath)
    if not relpath:
        raise web.HTTPNotFound()
    path = request.app[MEDIA].resolve(relpath)
    if not await asyncio.get_running_loop().run_in_executor(request.app[IO], path.is_file):
        raise web.HTTPNotFound()  # removed by retention after the page was rendered
    headers = {"Cache-Control": "private, max-age=86400"}  # media never change under an id
    if thumbnail:
        headers["Content-Type"] = "image/jpeg"
    elif media["kind"] in ("image", "video"):
        headers["Content-Type"] = media["content_type"]
    else:
        # Whatever a mail carried besides pictures is handed out as a download, never rendered by the browser.
        extension = ".eml" if media["kind"] == "raw" else path.suffix
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Disposition"] = f'attachment; filename="vmond-{media["kind"]}-{media_id}{extension}"'
    return web.FileResponse(path, headers=headers)
