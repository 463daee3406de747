"""Live pictures from the cameras' RTSP streams, for guards verifying an alarm: snapshots, live streams, and the
picture taken when an alarm is raised.

- **Snapshots** run in a small worker pool (:func:`vmond.live.work.snapshot`). A result, picture or error, is
  kept for :data:`SNAPSHOT_TTL` seconds and a grab in progress is shared: ten guards asking at once open one
  RTSP session, and a failing camera is not asked again and again.
- **Live streams**: one reader process per camera (:class:`vmond.live.session.LiveSession`), shared by all its
  viewers, at most ``live.max_streams`` at a time; it ends :data:`IDLE_GRACE` seconds after its last viewer
  left (a page reload keeps it). A camera whose stream just failed answers with that failure for
  :data:`RETRY_AFTER` seconds instead of starting another reader.
- **At raising**: with ``live.snapshot_on_alarm``, a snapshot is taken in the background right after an alarm
  is raised and kept with its event as media of kind ``snapshot``.

The RTSP URL (it may hold the camera's password) is read from the database when needed, handed to the worker
and never logged or answered; messages come from :class:`vmond.live.types.CameraError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vmond.live.session import LiveSession
from vmond.live.types import CameraError, Limits, Picture
from vmond.live.work import StreamOptions, snapshot
from vmond.store.alarms import attach_alarm_snapshot, record_alarm_snapshot_failure
from vmond.store.cameras import camera_source
from vmond.util.workers import WorkerFailed, WorkerPool

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.media.store import MediaStore
    from vmond.store.changes import Changes
    from vmond.store.db import Database

log = logging.getLogger(__name__)

LIMITS = Limits()
SNAPSHOT_TTL = 2.0  # seconds a snapshot (or its error) is served from memory
SNAPSHOT_MAX_WIDTH = 1280  # a picture to verify an alarm on: detail matters more than for the live view
SNAPSHOT_QUALITY = 85
SNAPSHOT_WORKERS = 2  # RTSP sessions for snapshots at once (beyond live.max_streams); one dead camera blocks none
SNAPSHOT_TIMEOUT = LIMITS.open_timeout + LIMITS.deadline + 5.0  # the pool kills a worker stuck past this
LIVE_FPS = 2.0
LIVE_MAX_WIDTH = 640  # small: JPEG encoding and the network cost what the pixels cost
LIVE_QUALITY = 70
IDLE_GRACE = 3.0
RETRY_AFTER = 3.0
WORKER_MEMORY = 1 << 30


@dataclass(frozen=True)
class Snapshot:
    picture: Picture
    taken_at: datetime


@dataclass
class _Cached:
    task: asyncio.Task[Snapshot | CameraError]
    expires: float = float("inf")  # set when the grab ends


@dataclass
class _Failure:
    error: CameraError
    at: datetime
    monotonic: float


@dataclass
class Counters:
    snapshot_grabs: int = 0  # RTSP sessions opened for snapshots
    snapshots_served: int = 0  # answers, from the cache or not
    streams_opened: int = 0  # RTSP sessions opened for live view
    viewers_dropped: int = 0  # slow clients cut off
    failures: dict[int, _Failure] = field(default_factory=dict)  # camera id -> its last stream or snapshot error


class LiveHub:
    """An async context: the snapshot worker pool starts on entry; on exit every stream and background grab ends."""

    def __init__(self, config: Config, db: Database, media: MediaStore, io: Executor, changes: Changes) -> None:
        self._config, self._db, self._media, self._io, self._changes = config, db, media, io, changes
        self.max_streams = config.live.max_streams
        self._pool = WorkerPool("live", workers=SNAPSHOT_WORKERS, max_tasks=100, memory_limit=WORKER_MEMORY)
        self._cache: dict[int, _Cached] = {}
        self._sessions: dict[int, LiveSession] = {}  # camera id -> its stream, until the reader has exited
        self._opening = asyncio.Lock()  # one decision at a time about starting streams (the limit, sharing)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending_alarm_snapshots: set[int] = set()
        self.counters = Counters()
        self._stream_options = StreamOptions(fps=LIVE_FPS, max_width=LIVE_MAX_WIDTH, quality=LIVE_QUALITY,
                                             limits=LIMITS, memory_limit=WORKER_MEMORY)

    async def __aenter__(self) -> LiveHub:
        await self._pool.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_streams("the server is shutting down")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pool.__aexit__(*exc_info)

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _url(self, camera_id: int) -> str:
        source = await self._db.read(camera_source, camera_id)
        if source is None:
            raise CameraError(404, "no such camera")
        active, url = source
        if not active:
            raise CameraError(409, "the camera is retired")
        if url is None:
            raise CameraError(409, "the camera has no RTSP URL (a supervisor can set one on the camera's page)")
        return url

    def _failed(self, camera_id: int, error: CameraError) -> None:
        loop = asyncio.get_running_loop()
        self.counters.failures[camera_id] = _Failure(error, datetime.now(UTC), loop.time())
        log.warning("live: camera %d: %s", camera_id, error.message)

    # --- snapshots ----------------------------------------------------------------------------------------------

    async def snapshot(self, camera_id: int) -> Snapshot:
        """The camera's picture of the last :data:`SNAPSHOT_TTL` seconds; raises :class:`CameraError`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for stale in [c for c, entry in self._cache.items() if entry.expires < now]:
            del self._cache[stale]
        entry = self._cache.get(camera_id)
        if entry is None:
            entry = self._cache[camera_id] = _Cached(self._spawn(self._grab(camera_id), f"snapshot-{camera_id}"))
            entry.task.add_done_callback(lambda _task: setattr(entry, "expires", loop.time() + SNAPSHOT_TTL))
        # Shielded: a guard who gives up must not cancel the grab the others wait for.
        result = await asyncio.shield(entry.task)
        self.counters.snapshots_served += 1
        if isinstance(result, CameraError):
            raise result
        return result

    async def _grab(self, camera_id: int) -> Snapshot | CameraError:
        try:
            url = await self._url(camera_id)
            self.counters.snapshot_grabs += 1
            picture = await self._pool.run(snapshot, url, SNAPSHOT_MAX_WIDTH, SNAPSHOT_QUALITY, LIMITS,
                                           timeout=SNAPSHOT_TIMEOUT)
        except CameraError as exc:
            if exc.status >= 500:
                self._failed(camera_id, exc)
            return exc
        except WorkerFailed:
            error = CameraError(504, f"no picture from the camera within {SNAPSHOT_TIMEOUT:.0f} s")
            self._failed(camera_id, error)
            return error
        self.counters.failures.pop(camera_id, None)
        return Snapshot(picture, datetime.now(UTC))

    # --- live streams -------------------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Reader processes that exist (streaming, starting or winding down): each may hold an RTSP session."""
        return len(self._sessions)

    @contextlib.asynccontextmanager
    async def watch(self, camera_id: int) -> AsyncIterator[LiveSession]:
        """The camera's live stream, shared, once its first picture is there; raises :class:`CameraError`
        (503 when ``live.max_streams`` streams of other cameras are being watched)."""
        session = await self._session_for(camera_id)
        session.viewers += 1
        if session.idle_timer is not None:
            session.idle_timer.cancel()
            session.idle_timer = None
        try:
            await session.next_frame(0)
            self.counters.failures.pop(camera_id, None)
            yield session
        finally:
            session.viewers -= 1
            if session.viewers == 0 and not session.ended:
                session.idle_timer = asyncio.get_running_loop().call_later(IDLE_GRACE, self._idle, session)

    def _idle(self, session: LiveSession) -> None:
        session.idle_timer = None
        if session.viewers == 0:
            self._spawn(session.stop("nobody is watching"), f"live-stop-{session.camera_id}")

    async def _session_for(self, camera_id: int) -> LiveSession:
        url = await self._url(camera_id)
        async with self._opening:
            session = self._sessions.get(camera_id)
            if session is not None and (session.ended or session.stopping or session.url != url):
                # On its way out (or showing an old URL): let it finish, then start afresh.
                await self._end(session, "the camera's RTSP URL changed")
                session = None
            if session is not None:
                return session
            failure = self.counters.failures.get(camera_id)
            if failure is not None and asyncio.get_running_loop().time() - failure.monotonic < RETRY_AFTER:
                raise failure.error
            if len(self._sessions) >= self.max_streams:
                idle = [s for s in self._sessions.values() if s.viewers == 0]
                if not idle:
                    raise CameraError(503, f"busy: {len(self._sessions)} cameras are being watched live, the most "
                                           f"this appliance streams at once (live.max_streams); try again when one "
                                           f"is closed")
                await self._end(idle[0], "another camera needed the stream")
            session = LiveSession(camera_id, url, self._stream_options, on_end=self._ended)
            self._sessions[camera_id] = session
            self.counters.streams_opened += 1
            session.start()
            self._spawn(self._forget_when_ended(session), f"live-watch-{camera_id}")
            log.info("live: camera %d: stream starting (%d of %d open)", camera_id, len(self._sessions),
                     self.max_streams)
            return session

    async def _end(self, session: LiveSession, reason: str) -> None:
        await session.stop(reason)
        if self._sessions.get(session.camera_id) is session:
            del self._sessions[session.camera_id]  # now, not when _forget_when_ended gets its turn

    def _ended(self, session: LiveSession) -> None:
        error = session.error
        if error is not None and error.status != 503:  # 503: stopped on purpose, not a camera problem
            self._failed(session.camera_id, error)
        log.info("live: camera %d: stream ended after %d picture(s): %s", session.camera_id, session.frames,
                 error.message if error is not None else "done")

    async def _forget_when_ended(self, session: LiveSession) -> None:
        """Its reader has exited: the stream no longer counts against ``live.max_streams``."""
        try:
            await session.wait_ended()
        finally:
            if self._sessions.get(session.camera_id) is session:
                del self._sessions[session.camera_id]
            if session.idle_timer is not None:
                session.idle_timer.cancel()

    async def stop_streams(self, reason: str) -> None:
        """End every stream (viewers get *reason*) and wait for the readers: at shutdown, before the web server
        waits for its requests to finish."""
        await asyncio.gather(*(s.stop(reason) for s in list(self._sessions.values())))

    # --- the picture at raising ---------------------------------------------------------------------------------

    def snapshot_for_alarm(self, alarm_id: int, camera_id: int | None) -> None:
        """With ``live.snapshot_on_alarm``: take the camera's picture now, in the background (raising the alarm
        does not wait for a camera), and keep it with the alarm."""
        if not self._config.live.snapshot_on_alarm or camera_id is None:
            return
        self.pending_alarm_snapshots.add(alarm_id)
        self._spawn(self._alarm_snapshot(alarm_id, camera_id), f"alarm-snapshot-{alarm_id}")

    async def _alarm_snapshot(self, alarm_id: int, camera_id: int) -> None:
        try:
            try:
                shot = await self.snapshot(camera_id)
            except CameraError as exc:
                if exc.status in (404, 409):
                    return  # no camera stream to take a picture from: nothing to say on the alarm
                await self._changes.record(record_alarm_snapshot_failure, alarm_id, exc.message)
            else:
                await self._keep(alarm_id, shot)
        except Exception:  # noqa: BLE001 - the alarm stands without its picture; say why in the log
            log.exception("live: alarm %d: keeping the picture at raising failed", alarm_id)
        finally:
            self.pending_alarm_snapshots.discard(alarm_id)

    async def _keep(self, alarm_id: int, shot: Snapshot) -> None:
        jpeg = shot.picture.jpeg
        path = f"{shot.taken_at:%Y/%m/%d}/alarm-{alarm_id}-at-raising.jpg"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._media.write_sync, path, jpeg)
        summary = await self._changes.record(attach_alarm_snapshot, alarm_id, path,
                                             sha256=hashlib.sha256(jpeg).hexdigest(), size=len(jpeg),
                                             width=shot.picture.width, height=shot.picture.height,
                                             taken_at=shot.taken_at)
        if summary is None:  # the alarm's event went away meanwhile
            await loop.run_in_executor(self._io, self._media.delete_sync, path)

    # --- what the API shows -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "max_streams": self.max_streams,
            "open_streams": self.open_streams,
            "streams": [{
                "camera_id": s.camera_id, "state": s.state, "viewers": s.viewers, "frames": s.frames,
                "started_at": s.started_at.isoformat(),
                "last_frame_at": s.latest.taken_at.isoformat() if s.latest else None,
                "width": s.latest.width if s.latest else None, "height": s.latest.height if s.latest else None,
            } for s in self._sessions.values()],
            "errors": [{"camera_id": camera_id, "at": f.at.isoformat(), "error": f.error.message}
                       for camera_id, f in sorted(self.counters.failures.items())],
            "snapshot_grabs": self.counters.snapshot_grabs,
            "snapshots_served": self.counters.snapshots_served,
            "streams_opened": self.counters.streams_opened,
            "viewers_dropped": self.counters.viewers_dropped,
        }
