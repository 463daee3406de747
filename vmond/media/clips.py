"""Clips for events: made in the encoder worker when an event has two pictures, made again when a burst adds
more, or taken from the camera's own MP4 when it plays in a browser.

A guard waits for the clip, so it is first encoded for speed (libx264's ultrafast); once its event has been
quiet for the coalesce window (no more pictures can join it), it is encoded again at the normal preset, about
half the size, and replaces the quick one. That second encode only uses spare capacity: it is dropped when the
queue is full or too many wait, and a failure keeps the quick clip.

Requests go through a bounded queue: a flood of events degrades to "clip skipped" (the event keeps its pictures),
never to memory growth. ``video.state`` goes pending -> ready or failed, each step published as ``event.updated``.
A worker that crashes or overruns costs that clip only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from vmond.media.cliptypes import ClipError, VideoRejected
from vmond.media.clipwork import MadeClip, encode_files, probe_file
from vmond.store.videos import (
    adopt_camera_video,
    attach_clip,
    camera_videos,
    clip_inputs,
    reject_camera_video,
    set_video_state,
)
from vmond.util.tasks import BackgroundService
from vmond.util.workers import WorkerFailed, WorkerPool

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.media.store import MediaStore
    from vmond.store.changes import Changes
    from vmond.store.db import Database
    from vmond.util.metrics import Metrics

log = logging.getLogger(__name__)

QUEUE_SIZE = 32
ENCODE_TIMEOUT = 120.0  # seconds for one clip in the worker; ten 4K stills take a few seconds on a Pi 4
PROBE_TIMEOUT = 30.0
MAX_YIELD = 10.0  # seconds a clip waits for the pipeline to catch up before it is made anyway
YIELD_POLL = 0.02  # seconds between looks at the pipeline while waiting: the clip starts soon after the last event
# libx264 preset of a clip made while its event may still grow: on 5 1080p frames ultrafast took 45-65 ms here
# against veryfast's 110-190 ms (files about twice as large), and a guard waits for this one.
QUICK_PRESET = "ultrafast"
FINAL_PRESET = None  # the encoder's default (veryfast): for the clip that is kept once the event is quiet
QUIET_FLOOR = 10.0  # seconds after a quick clip at the least before it is refined, whatever the coalesce window
MAX_DRAFTS = 256  # quick clips waiting to be refined; beyond this, new ones stay as they are
REFINABLE = "libx264"  # the only encoder with presets; a hardware encoder's clip is final at once


class ClipMaker(BackgroundService):
    task_name = "clips"

    def __init__(self, config: Config, db: Database, changes: Changes, media: MediaStore, workers: WorkerPool,
                 metrics: Metrics, io: Executor, make_room: Callable[[], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._make_room = make_room
        self._db = db
        self._changes = changes
        self._media = media
        self._workers = workers
        self._metrics = metrics
        self._io = io
        self._queue: asyncio.Queue[int] = asyncio.Queue(QUEUE_SIZE)
        self._queued: set[int] = set()
        self._again: set[int] = set()  # more pictures arrived while this event's clip was being made
        self._current: int | None = None
        self.skipped = 0
        self.wait_while: Callable[[], bool] = lambda: False
        self._skips: set[asyncio.Task[None]] = set()  # "clip skipped" being recorded: kept, and awaited on exit
        self._drafts: dict[int, asyncio.TimerHandle] = {}  # quick clips, each refined when its timer fires
        self._refining: dict[int, str] = {}  # queued refinements: event id -> the quick clip they replace
        self.refined = 0


    @property
    def queued(self) -> int:
        return self._queue.qsize() + (self._current is not None)

    def request(self, event_id: int) -> None:
        """The event got pictures (or a video): make or remake its clip soon. Never blocks."""
        draft = self._drafts.pop(event_id, None)
        if draft is not None:
            draft.cancel()  # a quick clip of all the pictures comes first; it is refined in turn
        self._refining.pop(event_id, None)  # a refinement waiting in the queue becomes that quick clip
        if event_id == self._current:
            self._again.add(event_id)
        elif event_id not in self._queued:
            try:
                self._queue.put_nowait(event_id)
                self._queued.add(event_id)
            except asyncio.QueueFull:
                self.skipped += 1
                log.warning("clip queue full: no clip for event %d (its pictures are kept)", event_id)
                task = asyncio.get_running_loop().create_task(self._publish_state(event_id, "failed", "clip_skipped"))
                self._skips.add(task)
                task.add_done_callback(self._skips.discard)

    def _refine_later(self, event_id: int, relpath: str) -> None:
        if len(self._drafts) >= MAX_DRAFTS:
            return  # a flood: the quick clips stay (refining saves disk, it is not owed to anyone)
        quiet = max(self._config.events.coalesce_window, QUIET_FLOOR)
        self._drafts[event_id] = asyncio.get_running_loop().call_later(quiet, self._refine, event_id, relpath)

    def _refine(self, event_id: int, relpath: str) -> None:
        self._drafts.pop(event_id, None)
        if event_id in self._queued or event_id == self._current:
            return  # a newer clip is on its way, and will be refined in turn
        try:
            self._queue.put_nowait(event_id)
        except asyncio.QueueFull:
            return  # busy: the quick clip stays
        self._queued.add(event_id)
        self._refining[event_id] = relpath

    async def __aexit__(self, *exc_info: object) -> None:
        for draft in self._drafts.values():
            draft.cancel()
        self._drafts.clear()
        await super().__aexit__(*exc_info)
        if self._skips:  # the database outlives this service: let what was skipped be said
            await asyncio.wait(list(self._skips), timeout=5)

    async def _run(self) -> None:
        while True:
            event_id = await self._queue.get()
            if event_id in self._refining and any(other not in self._refining for other in self._queued):
                self._queue.put_nowait(event_id)  # behind the quick clips: guards wait for those, not for this
                await asyncio.sleep(0)  # get() does not yield while the queue has items
                continue
            self._queued.discard(event_id)
            self._current = event_id
            try:
                await self._make(event_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("making the clip of event %d failed", event_id)
            finally:
                self._current = None
            if event_id in self._again:
                self._again.discard(event_id)
                self.request(event_id)

    async def _publish_state(self, event_id: int, state: str, flag: str | None = None) -> None:
        await self._changes.record(set_video_state, self._config.smtp.domain, event_id, state, flag)

    async def _make(self, event_id: int) -> None:
        if not self._config.video.enabled:  # no clips from stills: only a camera's own video may become the clip
            for own in await self._db.read(camera_videos, event_id):
                if await self._adopt(event_id, own):
                    return
            return
        draft = self._refining.pop(event_id, None)
        inputs = await self._db.read(clip_inputs, event_id)
        if not inputs["exists"]:
            return
        if draft is not None:
            if inputs["clip"] is not None and inputs["clip"]["path"] == draft:  # still the quick clip it was
                await self._refine_clip(event_id, inputs["images"])
            return
        for video in inputs["camera_videos"]:
            if await self._adopt(event_id, video):
                return
        if inputs["clip"] is not None and _is_camera_clip(inputs["clip"]["path"]):
            return  # the camera's own video is the clip; stills add nothing to it
        if len(inputs["images"]) < 2 or not self._config.video.enabled:
            return
        # "pending" is written while the clip gets under way: it only has to be said before "ready" or "failed".
        pending = asyncio.ensure_future(self._publish_state(event_id, "pending"))
        try:
            made, relpath, started = await self._encode(event_id, inputs["images"])
        except (WorkerFailed, ClipError) as exc:
            await pending
            self._metrics.clip_failures += 1
            self._metrics.clip_failures_in_a_row += 1
            log.warning("no clip for event %d: %s", event_id, exc)
            await self._publish_state(event_id, "failed", "clip_failed")
            return
        finally:
            await _settled(pending)
        await pending  # its error, if it had one
        self._metrics.clip_seconds_sum += time.monotonic() - started
        self._metrics.clip_count += 1
        self._metrics.clip_failures_in_a_row = 0
        if await self._attach(event_id, made, relpath) and made.info.encoder == REFINABLE:
            self._refine_later(event_id, relpath)

    async def _refine_clip(self, event_id: int, images: list[str]) -> None:
        try:
            made, relpath, _ = await self._encode(event_id, images, final=True)
        except (WorkerFailed, ClipError) as exc:
            log.warning("event %d keeps its quick clip; encoding the final one failed: %s", event_id, exc)
            return
        if await self._attach(event_id, made, relpath):
            self.refined += 1

    async def _attach(self, event_id: int, made: MadeClip, relpath: str) -> bool:
        """Make the clip at *relpath* the event's (the one it replaces is deleted); False if the event is gone."""
        info = made.info
        event, old = await self._changes.record(attach_clip, self._config.smtp.domain, event_id, relpath,
                                                sha256=made.sha256, size=info.bytes, width=info.width,
                                                height=info.height)
        if old is not None:
            await asyncio.get_running_loop().run_in_executor(self._io, self._media.delete_sync, old)
        if event is None:
            return False
        log.info("clip for event %d: %d frames, %dx%d, %d kB, %s", event_id, info.frames, info.width,
                 info.height, info.bytes // 1024, info.encoder)
        return True

    async def _encode(self, event_id: int, images: list[str], final: bool = False) -> tuple[MadeClip, str, float]:
        """Encode *images* into the event's clip file, installed durably; the clip, its path, when it started.
        *final*: at the normal preset, under a name of its own (a browser may be playing the quick one)."""
        for _ in range(int(MAX_YIELD / YIELD_POLL)):  # a flood of mail first becomes events, then clips
            if not self.wait_while():
                break
            await asyncio.sleep(YIELD_POLL)
        first = PurePosixPath(images[0])
        relpath = str(first.parent / f"event-{event_id}-clip-{len(images)}{'-final' if final else ''}.mp4")
        video = self._config.video
        if self._make_room is not None:
            await self._make_room()  # over the media quota: the disk keeper first removes the oldest media
        loop = asyncio.get_running_loop()
        # The encoder writes under a temporary name; the media store renames it into place and counts it.
        staged = await loop.run_in_executor(self._io, self._media.staging_path, relpath)
        started = time.monotonic()
        try:
            made = await self._workers.run(encode_files, [self._media.resolve(p) for p in images], staged,
                                           video.fps, video.max_width, video.encoder,
                                           FINAL_PRESET if final else QUICK_PRESET,
                                           timeout=ENCODE_TIMEOUT)
            await loop.run_in_executor(self._io, self._media.install_sync, staged, relpath)
        finally:
            await loop.run_in_executor(self._io, _remove_leftover, staged)
        return made, relpath, started

    async def _adopt(self, event_id: int, video: dict[str, Any]) -> bool:
        try:
            info = await self._workers.run(probe_file, self._media.resolve(video["path"]), timeout=PROBE_TIMEOUT)
        except (WorkerFailed, VideoRejected) as exc:
            log.warning("event %d: the camera's video was refused: %s", event_id, exc)
            info = None
        domain = self._config.smtp.domain
        if info is None or not info.browser_playable:
            await self._changes.record(reject_camera_video, domain, event_id, video["id"])
        else:
            await self._changes.record(adopt_camera_video, domain, event_id, video["id"], width=info.width,
                                       height=info.height)
        return info is not None and info.browser_playable


async def _settled(task: asyncio.Future[None]) -> None:
    """Wait for *task* to end, without raising its error (the caller retrieves it, or has an error of its own)."""
    if not task.done():
        await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "never retrieved" warning when another error is on its way


def _remove_leftover(staged: Path) -> None:
    staged.unlink(missing_ok=True)  # gone already once installed; left when the encoder failed or was killed


def _is_camera_clip(path: str) -> bool:
    return "-clip-" not in PurePosixPath(path).name
