"""The HTTP side of live view: snapshots, the MJPEG stream, the picture at raising, and the streams' status.

The stream is ``multipart/x-mixed-replace`` JPEGs (what an ``<img>`` shows natively, and what the dashboard's
script reads with ``fetch`` so that it can show failures as text). A part of type ``application/json``
``{"error": ...}`` ends a stream that fails after it started; before the first picture a failure is an ordinary
JSON error answer (502, 503 busy, 504 timeout).

Each viewer is sent the newest picture when it is ready for one: a viewer that is slow skips pictures, and one
that takes nothing for :data:`DROP_AFTER` seconds is dropped. What waits for a viewer is bounded by a small
socket send buffer and one picture, never a queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from aiohttp import web

from vmond.live.hub import LiveHub
from vmond.live.session import Frame, LiveSession
from vmond.live.types import CameraError
from vmond.store.alarms import alarm_snapshot_file
from vmond.store.cameras import list_cameras
from vmond.web.keys import DB, IO, MEDIA, SERVICES
from vmond.web.params import path_id
from vmond.web.scope import scope_of
from vmond.web.security import CONTENT_SECURITY_POLICY, json_error, require

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

log = logging.getLogger(__name__)

BOUNDARY = "vmondframe"
SEND_BUFFER = 64 * 1024  # bytes the kernel holds for one viewer: a couple of pictures
DROP_AFTER = 10.0  # seconds a viewer may take nothing before it is dropped
GONE_CHECK = 0.5  # seconds between looks whether the viewer is still there
STREAM_HEADERS = {
    "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # a reverse proxy in front must pass pictures on, not collect them
    # The security middleware cannot add these to a response that is already streaming.
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _hub(request: web.Request) -> LiveHub:
    hub = request.app[SERVICES].live
    if hub is None:
        raise web.HTTPServiceUnavailable(text="live view is not running")
    return hub


@routes.get("/api/cameras/{camera_id}/snapshot")
@require("guard")
async def snapshot(request: web.Request) -> web.StreamResponse:
    """``GET /api/cameras/{id}/snapshot``: the camera's current picture (JPEG), or why there is none."""
    try:
        shot = await _hub(request).snapshot(path_id(request, "camera_id"))
    except CameraError as exc:
        return json_error(exc.status, exc.message)
    return web.Response(body=shot.picture.jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "no-store", "X-Taken-At": shot.taken_at.isoformat()})


def _part(content_type: str, body: bytes, extra: str = "") -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body + b"\r\n"


def _picture(frame: Frame) -> bytes:
    return _part("image/jpeg", frame.jpeg, f"X-Taken-At: {frame.taken_at.isoformat()}\r\n")


@routes.get("/api/cameras/{camera_id}/live")
@require("guard")
async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/cameras/{id}/live``: pictures as they come (about two a second) for as long as it is read."""
    hub = _hub(request)
    camera_id = path_id(request, "camera_id")
    try:
        async with hub.watch(camera_id) as session:
            response = web.StreamResponse(headers=STREAM_HEADERS)
            _small_send_buffer(request)
            await response.prepare(request)
            await _send_pictures(request, response, session, hub)
            return response
    except CameraError as exc:
        return json_error(exc.status, exc.message)


def _small_send_buffer(request: web.Request) -> None:
    """The kernel's buffer for this viewer stays small: pictures wait in it at most briefly, and a viewer that
    stops reading shows as "behind" after a couple of pictures, not after megabytes."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass  # not a TCP socket (a test's in-memory transport): the default buffer does


async def _send_pictures(request: web.Request, response: web.StreamResponse, session: LiveSession,
                         hub: LiveHub) -> None:
    transport = request.transport
    seq = 0
    behind_since: float | None = None
    loop = asyncio.get_running_loop()
    while transport is not None and not transport.is_closing():
        try:
            # Not cancelled when the viewer goes (aiohttp does not cancel handlers): look every so often, so
            # that a closed page frees its stream at once, not at the next picture.
            async with asyncio.timeout(GONE_CHECK):  # not wait_for(): it can swallow a cancellation on 3.11
                frame = await session.next_frame(seq)
        except TimeoutError:
            continue
        except CameraError as exc:
            await _write(response, _part("application/json", json.dumps({"error": exc.message}).encode())
                         + f"--{BOUNDARY}--\r\n".encode())
            return
        seq = frame.seq
        if transport.get_write_buffer_size() > 0:
            # The last picture has not left yet: skip this one, and give up on a viewer that takes nothing.
            behind_since = behind_since or loop.time()
            if loop.time() - behind_since > DROP_AFTER:
                hub.counters.viewers_dropped += 1
                log.info("live: camera %d: dropping a viewer that stopped reading", session.camera_id)
                transport.close()
                return
            continue
        behind_since = None
        if not await _write(response, _picture(frame)):
            return


async def _write(response: web.StreamResponse, data: bytes) -> bool:
    """False when the viewer is gone (closed the page) or does not take the data within :data:`DROP_AFTER`."""
    try:
        async with asyncio.timeout(DROP_AFTER):
            await response.write(data)
    except (ConnectionError, TimeoutError, RuntimeError):  # RuntimeError: aiohttp 3.8 on a closed transport
        return False
    return True


@routes.get("/api/live")
@require("guard")
async def status(request: web.Request) -> web.Response:
    """``GET /api/live``: open streams, their viewers, the last error of each camera, counters (streams and
    errors only of the user's accounts' cameras)."""
    body = _hub(request).status()
    scope = scope_of(request)
    if scope.limited:
        cameras = {c["id"] for c in await request.app[DB].read(list_cameras, "", scope)}
        body["streams"] = [s for s in body["streams"] if s["camera_id"] in cameras]
        body["errors"] = [e for e in body["errors"] if e["camera_id"] in cameras]
    return web.json_response(body)


@routes.get("/api/alarms/{alarm_id}/snapshot")
@require("guard")
async def alarm_snapshot(request: web.Request) -> web.StreamResponse:
    """``GET /api/alarms/{id}/snapshot``: the picture taken when the alarm was raised."""
    found = await request.app[DB].read(alarm_snapshot_file, path_id(request, "alarm_id"))
    if found is None:
        return json_error(404, "this alarm has no picture from the moment of raising")
    path = request.app[MEDIA].resolve(found["path"])
    if not await asyncio.get_running_loop().run_in_executor(request.app[IO], path.is_file):
        return json_error(404, "the picture was removed (retention)")
    return web.FileResponse(path, headers={"Content-Type": found["content_type"],
                                           "Cache-Control": "private, max-age=86400"})


async def end_streams(app: web.Application) -> None:
    """on_shutdown: end the streams now, so the web server need not wait out its timeout for their requests."""
    hub = app[SERVICES].live
    if hub is not None:
        await hub.stop_streams("the server is shutting down")
