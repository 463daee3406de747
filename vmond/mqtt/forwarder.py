"""The MQTT forwarder: outbox rows to the broker, in order and at least once; availability, camera snapshots,
appliance status and Home Assistant discovery beside them.

Delivery. Rows are handed to paho in id order, at most ``window`` unacknowledged at a time; a row is deleted
only after its PUBACK. paho holds what it was handed until acknowledged and sends it again first after a
reconnect, so a reconnect resumes from the oldest undelivered row; new rows wait until that resent window is
acknowledged, so nothing overtakes it. A new process (restart) starts from the oldest row in the table. Either
way a message may arrive twice (same id), never out of order and never not at all, unless the outbox outgrew
its bounds: then the oldest rows are dropped, counted and logged at WARNING.

Waking up: :meth:`Forwarder.notify` after a write that queued a message; a short poll otherwise.

A broker that cannot be reached, or settings that cannot be read (a missing password file), never stop the
daemon: alarms keep coming in and queue up, and ``status()`` / ``/api/health`` say what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from vmond.config import Config, MqttConfig
from vmond.media.store import MediaStore
from vmond.mqtt import pictures
from vmond.mqtt.client import CANNOT_CONNECT, RECONNECT_DELAY, Link, LinkError, LinkSettings, diagnose
from vmond.mqtt.discovery import Announcer, Discovery
from vmond.mqtt.media import media_bytes
from vmond.mqtt.state import BrokerState, save
from vmond.store import outbox
from vmond.store.db import Database
from vmond.store.messages import Topics
from vmond.store.pictures import thumbnail_path
from vmond.util.clock import utcnow
from vmond.util.crashpoints import crashpoint
from vmond.util.tasks import in_daemon_thread
from vmond.util.version import VERSION

log = logging.getLogger(__name__)

ONLINE, OFFLINE, STOPPED = b"online", b"offline", b"stopped"
WINDOW = 20  # outbox messages handed to the broker and not yet acknowledged
EXTRA_INFLIGHT = 16  # paho's own in-flight limit on top: room for snapshots, status and discovery messages
POLL_INTERVAL = 0.5  # seconds between outbox reads when nobody calls notify()
TRIM_INTERVAL = 60.0
STATUS_INTERVAL = 60.0  # the retained status message; also how often camera changes are looked for
STATS_INTERVAL = 1.0
SETUP_RETRY = 30.0  # settings that could not be read (password file, certificates) are tried again after this
RESEND_TIMEOUT = 30.0  # after a reconnect, how long paho may take to get its resent window acknowledged
STOP_TIMEOUT = 3.0  # waiting for the broker to take "stopped" at a clean stop
HA_EVENT_MAX_AGE = 300.0  # older alarms (sent after an outage) do not fire Home Assistant event entities
STATE_FILE = "mqtt-state.json"


@dataclass(frozen=True)
class OutboxLimits:
    max_messages: int  # mqtt.outbox_max_messages
    max_age: float  # mqtt.outbox_max_age, seconds

    @classmethod
    def from_config(cls, mqtt: MqttConfig) -> OutboxLimits:
        # mqtt.outbox_max_messages / mqtt.outbox_max_age, once the configuration has them.
        return cls(mqtt.outbox_max_messages, mqtt.outbox_max_age)


def _settle(done: list[int], tried: list[int]) -> int:
    outbox.count_attempt(tried)
    return outbox.delivered(done)


class Forwarder:
    """``async with Forwarder(config, db, media, io) as mqtt:`` forwards until the block ends."""

    def __init__(self, config: Config, db: Database, media: MediaStore, io: Executor, *, window: int | None = None,
                 poll_interval: float | None = None, limits: OutboxLimits | None = None,
                 trim_interval: float | None = None, status_interval: float | None = None,
                 reconnect_delay: tuple[float, float] | None = None) -> None:
        self._mqtt = config.mqtt
        self._data_dir = config.storage.data_dir
        self._db, self._media, self._io = db, media, io
        self.topics = Topics(config.mqtt.topic_prefix, config.site.id)
        self._discovery = Discovery(self.topics, config.mqtt.homeassistant_prefix, config.site.name,
                                    VERSION)
        self._window, self._poll = window or WINDOW, poll_interval or POLL_INTERVAL
        self.limits = limits or OutboxLimits.from_config(config.mqtt)
        self._trim_interval = trim_interval or TRIM_INTERVAL
        self._status_interval = status_interval or STATUS_INTERVAL
        self._reconnect_delay = reconnect_delay or RECONNECT_DELAY
        self._wake = asyncio.Event()
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._diagnosis: asyncio.Task[None] | None = None
        self._state_path = self._data_dir / STATE_FILE
        self._state = BrokerState()
        self._state_dirty = False
        self._stopping = False
        self._cursor = 0  # the last row handed to paho
        self._in_flight: dict[int, int] = {}  # mid -> row id
        self._quiet: set[int] = set()  # mids of config messages (no crash point)
        self._acked: list[int] = []
        self._attempted: list[int] = []
        self._draining_until: float | None = None  # after a reconnect: paho resends the window first
        self._snapshots = pictures.Snapshots(self.topics, self._state, db, media, io)
        self._announcer = Announcer(self._discovery, self._mqtt.homeassistant_discovery, self._state, db)
        self._next_setup = self._next_trim = self._next_status = self._next_stats = 0.0
        self._stats: dict[str, Any] = {"depth": None, "oldest_age_s": None}
        self._stats_at = 0.0
        self.connected = False
        self.connected_since: str | None = None
        self.last_error: str | None = None
        self._failures = 0
        self.dropped = self.delivered = self.published = self.max_in_flight = 0

    # -- lifecycle and the lead's interface ------------------------------------------------------------------

    async def __aenter__(self) -> Forwarder:
        loop = asyncio.get_running_loop()
        self._state = await loop.run_in_executor(self._io, BrokerState.load, self._state_path)
        self._snapshots = pictures.Snapshots(self.topics, self._state, self._db, self._media, self._io)
        self._announcer = Announcer(self._discovery, self._mqtt.homeassistant_discovery, self._state, self._db)
        await self._trim()
        await self._start_link()
        self._task = asyncio.create_task(self._run(), name="mqtt-forwarder")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        for task in (self._task, self._diagnosis):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._link is not None:
            try:
                # paho's stop blocks (joins its thread); a daemon thread of our own keeps a hung broker from
                # holding up the shutdown of the default executor.
                await in_daemon_thread(functools.partial(self._link.stop, STOPPED, STOP_TIMEOUT), STOP_TIMEOUT + 5,
                                       "mqtt-stop")
            except TimeoutError:
                log.warning("mqtt: the network thread did not stop in time")
        await self._settle()  # acknowledgements that came in while stopping
        await self._save_state()
        log.info("mqtt: stopped (%d delivered, %d dropped since start)", self.delivered, self.dropped)

    def notify(self) -> None:
        """A write queued outbox messages: forward them now rather than at the next poll."""
        self._wake.set()

    def refresh_discovery(self) -> None:
        """Cameras were added, renamed, retired or deleted: update Home Assistant's view and the snapshots soon."""
        self._next_status = 0.0
        self._snapshots.rescan()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For /api/health and the dashboard: connection, outbox depth and age, drops, last error."""
        age = self._stats["oldest_age_s"]
        if age is not None:
            age = round(age + time.monotonic() - self._stats_at, 1)
        return {"enabled": True, "connected": self.connected,
                "broker": f"{self._mqtt.host}:{self._mqtt.port}", "connected_since": self.connected_since,
                "outbox_depth": self._stats["depth"], "oldest_undelivered_age_s": age, "dropped": self.dropped,
                "delivered": self.delivered, "in_flight": len(self._in_flight),
                "snapshots_pending": self._snapshots.pending, "last_error": self.last_error}

    async def _start_link(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_setup = time.monotonic() + SETUP_RETRY
        try:
            settings = await loop.run_in_executor(self._io, LinkSettings.from_config, self._mqtt)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.last_error = f"cannot read the MQTT settings: {exc}"
            log.error("mqtt: %s; alarms queue up meanwhile, retrying in %.0f s", self.last_error, SETUP_RETRY)
            return
        self._link = Link(settings, self, loop, will=(self.topics.available, OFFLINE),
                          max_inflight=self._window + EXTRA_INFLIGHT, reconnect_delay=self._reconnect_delay)
        self._link.start()
        log.info("mqtt: forwarding to %s%s as %s, topics under %s/", settings.address,
                 " (TLS)" if settings.tls else "", settings.client_id, self.topics.base)

    # -- paho's reports (on the loop, via Link) --------------------------------------------------------------

    def link_connected(self) -> None:
        assert self._link is not None
        log.info("mqtt: connected to %s%s", self._link.settings.address,
                 f" after {self._failures} failed attempt(s)" if self._failures else "")
        self.connected, self.connected_since = True, utcnow().isoformat()
        self.last_error, self._failures = None, 0
        self._link.publish(self.topics.available, ONLINE, retain=True)
        if self._mqtt.homeassistant_discovery:
            self._link.subscribe(self._discovery.status_topic)
        self._draining_until = time.monotonic() + RESEND_TIMEOUT if self._in_flight else None
        self._snapshots.rescan()
        self._announcer.force = True
        self.refresh_discovery()

    def link_failed(self, reason: str) -> None:
        self.connected = False
        self._failures += 1
        if self._failures > 1:  # said once per outage; the count shows at the reconnect
            log.debug("mqtt: connection attempt %d failed: %s", self._failures, reason)
            if reason != CANNOT_CONNECT:
                self.last_error = reason
        elif reason != CANNOT_CONNECT:
            self._report_failure(reason)
        elif self._diagnosis is None or self._diagnosis.done():
            self._diagnosis = asyncio.create_task(self._diagnose(), name="mqtt-diagnose")

    def link_lost(self, reason: str) -> None:
        if self.connected and not self._stopping:
            log.warning("mqtt: lost the connection to the broker (%s); reconnecting", reason)
            self.last_error = f"connection lost: {reason}"
        self.connected = False

    def link_published(self, mid: int) -> None:
        if mid in self._in_flight and mid not in self._quiet:
            crashpoint("before_puback")  # the broker has it; our outbox does not know yet
        self._quiet.discard(mid)
        if (row := self._in_flight.pop(mid, None)) is not None:
            self._acked.append(row)
        elif self._snapshots.acknowledged(mid):
            self._state_dirty = True
        else:
            return
        self._wake.set()

    def link_message(self, topic: str, payload: bytes) -> None:
        if topic == self._discovery.status_topic and payload.strip() == b"online":
            log.info("mqtt: Home Assistant came online; announcing the cameras again")
            self._announcer.force = True
            self.refresh_discovery()

    async def _diagnose(self) -> None:
        assert self._link is not None
        reason = await asyncio.get_running_loop().run_in_executor(self._io, diagnose, self._link.settings)
        if not self.connected:
            self._report_failure(reason)

    def _report_failure(self, reason: str) -> None:
        self.last_error = reason
        log.warning("mqtt: cannot connect to %s:%d: %s; retrying with backoff", self._mqtt.host, self._mqtt.port,
                    reason)

    # -- the forwarding task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._pass()
            except Exception as exc:  # noqa: BLE001 - logged; the next pass starts over from the database
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("mqtt: forwarding failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def _pass(self) -> None:
        now = time.monotonic()
        if self._link is None and now >= self._next_setup:
            await self._start_link()
        await self._settle()
        if now >= self._next_trim:
            await self._trim()
        if self.connected and self._link is not None:
            if now >= self._next_status:
                self._next_status = now + self._status_interval
                self._state_dirty |= await self._announcer.announce(self._link)
                await self._publish_status(self._link)
            await self._forward(self._link)
            await self._snapshots.send(self._link, lambda: self.connected)
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            self._stats = await self._db.read(outbox.stats)
            self._stats_at = time.monotonic()
        await self._save_state()

    async def _save_state(self) -> None:
        if self._state_dirty:
            self._state_dirty = False
            await asyncio.get_running_loop().run_in_executor(self._io, save, self._state_path, self._state.dump())

    async def _settle(self) -> None:
        done, tried = self._acked[:], self._attempted[:]
        if not done and not tried:
            return
        await self._db.write(_settle, done, tried)
        del self._acked[:len(done)], self._attempted[:len(tried)]
        self.delivered += len(done)
        self._next_stats = 0.0

    async def _trim(self) -> None:
        self._next_trim = time.monotonic() + self._trim_interval
        dropped = await self._db.write(outbox.trim, self.limits.max_messages, self.limits.max_age)
        if dropped:
            self.dropped += dropped
            self._next_stats = 0.0
            log.warning("mqtt: the outbox outgrew its bounds (%d messages, %.0f s): dropped the %d oldest "
                        "undelivered message(s), %d since start; the central station will not get them",
                        self.limits.max_messages, self.limits.max_age, dropped, self.dropped)

    async def _forward(self, link: Link) -> None:
        if self._draining_until is not None:
            if not self._in_flight:
                self._draining_until = None
            elif time.monotonic() < self._draining_until:
                return  # paho is resending the window; nothing may overtake it
            else:
                log.warning("mqtt: the resent window was not acknowledged in time; publishing it again")
                self._cursor = min(self._in_flight.values()) - 1
                self._in_flight.clear()
                self._draining_until = None
        while self.connected and len(self._in_flight) < self._window:
            rows = await self._db.read(outbox.pending, self._cursor, self._window - len(self._in_flight))
            if not rows:
                return
            for row in rows:
                if not self.connected:
                    return
                payload = await self._payload(link, row)
                if payload is None:  # a media file removed meanwhile, or too large: skipped (logged)
                    self._acked.append(row["id"])
                    self._cursor = row["id"]
                    continue
                try:
                    mid = link.publish(row["topic"], payload, row["qos"], row["retain"])
                except LinkError as exc:
                    self.dropped += 1
                    log.error("mqtt: dropped outbox message %d for %s, which the client refuses: %s",
                              row["id"], row["topic"], exc)
                    self._acked.append(row["id"])
                else:
                    if row["topic"] == self.topics.config:  # queued at every start: crash points aim past it
                        self._quiet.add(mid)
                    else:
                        crashpoint("after_publish")
                    self._in_flight[mid] = row["id"]
                    self._attempted.append(row["id"])
                    self.published += 1
                    self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
                self._cursor = row["id"]

    async def _payload(self, link: Link, row: dict[str, Any]) -> bytes | None:
        if row["topic"] == self.topics.events:
            return await self._prepare(link, row)
        if row["topic"].startswith(f"{self.topics.base}/media/"):  # a reference: the file is read now
            return await media_bytes(row["payload"], self._db, self._media, self._io, self._mqtt.max_media_size)
        return bytes(row["payload"])

    async def _prepare(self, link: Link, row: dict[str, Any]) -> bytes:
        """An ``events`` message as published: with its thumbnail if configured. Also notes the camera's new
        picture for the snapshot topic and, for Home Assistant, fires the camera's event entity."""
        try:
            message = json.loads(row["payload"])
            camera, images = pictures.event_pictures(message)
        except (ValueError, AttributeError, TypeError, KeyError):
            return row["payload"]  # not ours to judge: forwarded as queued
        if camera is not None:
            self._snapshots.note(camera, images)
            if (self._mqtt.homeassistant_discovery and message.get("type") == "new"
                    and (utcnow() - row["created_at"]).total_seconds() < HA_EVENT_MAX_AGE):
                link.publish(self.topics.camera_event(camera),
                             self._discovery.camera_event(message["id"], message["event"]))
        if self._mqtt.embed_thumbnail and images:
            try:
                jpeg = await self._read_thumbnail(images[0])
            except (OSError, ValueError) as exc:
                log.warning("mqtt: event %s goes without its thumbnail: %s", message["event"].get("id"), exc)
            else:
                if jpeg is not None:
                    return pictures.with_thumbnail(message, jpeg)
        return row["payload"]

    async def _read_thumbnail(self, media_id: int) -> bytes | None:
        path = await self._db.read(thumbnail_path, media_id)
        if path is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._io, self._media.resolve(path).read_bytes)

    async def _publish_status(self, link: Link) -> None:
        stats = await self._db.read(outbox.stats)
        disk = await asyncio.get_running_loop().run_in_executor(self._io, shutil.disk_usage, self._data_dir)
        body = {"outbox_depth": stats["depth"], "oldest_undelivered_age_s": stats["oldest_age_s"],
                "dropped": self.dropped, "disk_free_bytes": disk.free, "disk_total_bytes": disk.total,
                "version": VERSION, "at": (at := utcnow().isoformat()), "heartbeat_at": at}
        link.publish(self.topics.status, json.dumps(body, separators=(",", ":")).encode(), retain=True)
