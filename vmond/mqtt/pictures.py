"""Pictures for MQTT: the latest snapshot of each camera, and small thumbnails embedded in event messages.

The pictures are found by :mod:`vmond.store.pictures` (on a database thread, through ``db.read``); file reads are
blocking (run them on the I/O executor). Camera test mails stay local, as their events do: their pictures are never a
camera's snapshot.
A camera that is retired or deleted loses its retained snapshot (an empty retained message clears it), also when
that happened while vmond was down: which cameras have one on the broker is kept in :class:`BrokerState`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from vmond.store.cameras import active_camera_ids
from vmond.store.pictures import latest_images

if TYPE_CHECKING:
    from vmond.media.store import MediaStore
    from vmond.mqtt.client import Link
    from vmond.mqtt.state import BrokerState
    from vmond.store.db import Database
    from vmond.store.messages import Topics

log = logging.getLogger(__name__)


def event_pictures(message: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(camera id, picture ids) of an ``events`` message."""
    event = message.get("event")
    if not isinstance(event, dict):
        return None, []
    camera = event.get("camera") or {}
    return camera.get("id"), [image["id"] for image in event.get("images") or () if isinstance(image.get("id"), int)]


def with_thumbnail(message: dict[str, Any], jpeg: bytes) -> bytes:
    """The ``events`` message with ``event.thumbnail`` set: for stations that cannot reach the appliance's URLs."""
    event = {**message["event"], "thumbnail": {"content_type": "image/jpeg",
                                               "data": base64.b64encode(jpeg).decode("ascii")}}
    return json.dumps({**message, "event": event}, separators=(",", ":"), ensure_ascii=False).encode()


class Snapshots:
    """Each camera's latest picture on its retained snapshot topic: what the broker has (acknowledged, kept in
    :class:`BrokerState` across restarts), what is on its way, and what is still wanted. One picture per camera
    in flight; a newer one follows the acknowledgement, so the topic always ends on the newest."""

    def __init__(self, topics: Topics, state: BrokerState, db: Database, media: MediaStore, io: Executor) -> None:
        self._topics, self._state, self._db, self._media, self._io = topics, state, db, media, io
        self.wanted: dict[int, dict[str, Any]] = {}  # camera id -> {"media_id", "path"}
        self.in_flight: dict[int, tuple[int, int]] = {}  # mid -> (camera id, media id)
        self.clearing: dict[int, int] = {}  # mid -> camera id whose retained snapshot is being removed
        self._check: set[int] = set()
        self._scan_all = True
        self._sweep = True  # look for retired or deleted cameras whose snapshot the broker still holds

    @property
    def pending(self) -> int:
        return len(self.wanted) + len(self.in_flight) + len(self.clearing)

    def rescan(self) -> None:
        """Compare every camera with what the broker has (at each connect: it may have missed something; and when
        cameras were retired or deleted)."""
        self._scan_all = self._sweep = True

    def note(self, camera: int, image_ids: list[int]) -> None:
        """An event of *camera* with these pictures went out: look at its latest picture."""
        if image_ids and max(image_ids) > self._known(camera):
            self._check.add(camera)

    def acknowledged(self, mid: int) -> bool:
        """The broker took message *mid*; True if it was a snapshot (and the remembered state changed)."""
        if (cleared := self.clearing.pop(mid, None)) is not None:
            self._state.snapshots.pop(cleared, None)
            return True
        sent = self.in_flight.pop(mid, None)
        if sent is None:
            return False
        camera, media_id = sent
        if media_id > self._state.snapshots.get(camera, 0):
            self._state.snapshots[camera] = media_id
        return True

    def _known(self, camera: int) -> int:
        """The newest picture of *camera* the broker has, is being sent, or is already wanted."""
        wanted = self.wanted.get(camera, {}).get("media_id", 0)
        sent = max((m for c, m in self.in_flight.values() if c == camera), default=0)
        return max(wanted, sent, self._state.snapshots.get(camera, 0))

    async def send(self, link: Link, connected: Callable[[], bool]) -> None:
        if self._sweep:
            self._sweep = await self._clear_gone(link)
        if self._scan_all or self._check:
            cameras = None if self._scan_all else sorted(self._check)
            self._scan_all, self._check = False, set()
            for camera, latest in (await self._db.read(latest_images, cameras)).items():
                if latest["media_id"] > self._known(camera):
                    self.wanted[camera] = latest
        busy = {camera for camera, _ in self.in_flight.values()}
        loop = asyncio.get_running_loop()
        for camera, latest in list(self.wanted.items()):
            if not connected():
                return
            if camera in busy:
                continue
            del self.wanted[camera]
            if latest["media_id"] <= self._state.snapshots.get(camera, 0):
                continue
            try:
                jpeg = await loop.run_in_executor(self._io, self._media.resolve(latest["path"]).read_bytes)
            except (OSError, ValueError) as exc:
                log.warning("mqtt: no snapshot for camera %d: %s", camera, exc)
                continue
            mid = link.publish(self._topics.snapshot(camera), jpeg, retain=True)
            self.in_flight[mid] = (camera, latest["media_id"])

    async def _clear_gone(self, link: Link) -> bool:
        """Remove the retained snapshot of every camera the broker holds one for that is retired or deleted. A
        camera with a picture still on its way waits for it, so the empty message comes last, and so does one
        whose Home Assistant configs are not taken back yet (the announcer's next pass does): a station that
        sees the snapshot gone sees the camera gone. True: some wait."""
        busy = {camera for camera, _ in self.in_flight.values()}
        held = (set(self._state.snapshots) | busy) - set(self.clearing.values())
        if not held:
            return False
        gone = held - await self._db.read(active_camera_ids, sorted(held))
        waiting = busy | self._state.announced
        for camera in sorted(gone - waiting):
            log.info("mqtt: camera %d is retired or gone: removing its retained snapshot", camera)
            self.wanted.pop(camera, None)
            self.clearing[link.publish(self._topics.snapshot(camera), b"", retain=True)] = camera
        return bool(gone & waiting)
