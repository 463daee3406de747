"""A central station's subscription to its sites (issue 18): every site message mirrored, acknowledged once stored.

The central keeps a broker connection of its own for it: a fixed client id (``<central.mqtt.client_id>-mirror``)
with clean session off and QoS 1 subscriptions to ``<prefix>/+/events``, ``alarms``, ``config``, ``status``,
``available``, ``commands/result`` and ``media/#``: what the sites publish while the central is down waits in
the broker's session.

A message is acknowledged (PUBACK) only once its change is committed, so a central killed in between gets it again
from the broker. On paho 2.x that is a manual acknowledgement, and the messages that arrived meanwhile are mirrored
together in one transaction (each in a savepoint of its own: one bad message does not fail its neighbours); paho
1.6 acknowledges when ``on_message`` returns, so there paho's thread waits for the message's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt

from vmond.config import Config
from vmond.mqtt.client import PAHO2, LinkSettings, connected_ok, session_client, stop_client
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.util.clock import utcnow

log = logging.getLogger(__name__)

# The broker sends at most its in-flight window of unacknowledged messages (mosquitto: 20 per client), so a batch
# is bounded by that; this is a second bound for brokers configured wider.
MAX_BATCH = 200
RETRY_DELAY = 2.0  # seconds before a batch the store refused (disk full, database busy) is tried again
CLOSING_CHECK = 1.0  # seconds: how often paho 1.6's thread, waiting for a commit, looks whether the link closes
# A site's JSON message larger than this is not one (a config of hundreds of accounts is well under): dropped unread.
MAX_MESSAGE = 4 << 20
SUBSCRIBED = ("events", "alarms", "config", "status", "available", "commands/result", "media/#")
MediaHandler = Callable[[str, int, bool, bytes], Awaitable[None]]


def mirror_client_id(client_id: str) -> str:
    return f"{client_id}-mirror"


@dataclasses.dataclass
class _Received:
    mid: int
    qos: int
    site: str
    what: str  # events | alarms | config | status | available | commands/result | media/<id>[/thumbnail]
    payload: bytes
    retained: bool = False  # a copy the broker kept, handed over as the central (re)subscribed: old news
    done: ThreadFuture[None] | None = None  # paho 1.6: its thread waits on it
    connection: int = 0  # which connection delivered it: an acknowledgement is only good on that one


class MirrorLink:
    """``async with MirrorLink(config, db, changes, io):`` mirrors the sites' messages until the block ends."""

    def __init__(self, config: Config, db: Database, changes: Changes, io: Executor,
                 on_media: MediaHandler | None = None) -> None:
        self._config = config
        self._central = config.central
        self._prefix = config.central.mqtt.topic_prefix
        self._db, self._changes, self._io = db, changes, io
        self.on_media = on_media
        self.on_available: Callable[[], None] | None = None  # a site's available topic was mirrored (committed)
        self.listening_since: datetime | None = None  # when the link last connected; None while it is down
        self._names = {site.id: site.name for site in config.central.sites if site.name}  # over the announced
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Received] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.connected = self.closing = False
        self.connections = 0  # counts the broker connections made: a message's mid belongs to one of them
        self.mirrored = self.dropped = 0

    async def __aenter__(self) -> MirrorLink:
        loop = self._loop = asyncio.get_running_loop()
        link = self._central.link(self._config.mqtt)
        settings = await loop.run_in_executor(self._io, LinkSettings.from_config, link)
        settings = dataclasses.replace(settings, client_id=mirror_client_id(settings.client_id))
        self._worker = asyncio.create_task(self._mirror(), name="central-mirror")
        self._client = session_client(settings, self._on_connect, self._on_message,
                                      on_disconnect=self._on_disconnect, manual_ack=PAHO2)
        log.info("central: mirroring the sites on %s:%d under %s/+ as %s", settings.host, settings.port,
                 self._prefix, settings.client_id)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closing = True
        if self._client is not None:
            client = self._client
            self._client = None
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(stop_client, client))
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def status(self) -> dict[str, Any]:
        """What ``/api/health`` says of the mirror."""
        return {"connected": self.connected, "mirrored": self.mirrored, "dropped": self.dropped,
                "waiting": self._queue.qsize()}

    # -- paho's thread -----------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if not connected_ok(rc):
            return
        self.connections += 1
        self.connected = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: vmond is going away
                self._loop.call_soon_threadsafe(self._listening, True)
        # The session keeps the subscriptions; made again in case the broker lost it.
        client.subscribe([(f"{self._prefix}/+/{what}", 1) for what in SUBSCRIBED])

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        self.connected = False
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: vmond is going away
                self._loop.call_soon_threadsafe(self._listening, False)

    def _listening(self, up: bool) -> None:
        self.listening_since = utcnow() if up else None

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        loop = self._loop
        item = self._received(message)
        if item is None or loop is None:
            self._ack(client, message.mid, message.qos)  # not ours: nothing to keep
            return
        if not PAHO2:
            item.done = ThreadFuture()
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: vmond is going away, and the broker delivers it again
            return
        if item.done is not None:
            self._wait_committed(item.done)

    def _wait_committed(self, done: ThreadFuture[None]) -> None:
        """paho 1.6 acknowledges when ``on_message`` returns: wait for the commit however long the store takes (a
        full disk is tried again and again), unless the link closes: its DISCONNECT is then sent before the
        acknowledgement, which never is, and the broker delivers the message again on the next start."""
        waited = 0.0
        while not self.closing:
            try:
                done.result(CLOSING_CHECK)
                return
            except FutureTimeout:
                waited += CLOSING_CHECK
                if waited % 60 == 0:
                    log.warning("central: a site message has waited %.0f s for the database", waited)

    def _received(self, message: mqtt.MQTTMessage) -> _Received | None:
        if not message.topic.startswith(f"{self._prefix}/"):
            return None
        site, _, what = message.topic[len(self._prefix) + 1:].partition("/")
        if not what or not message.payload:  # an empty retained payload clears a topic
            return None
        if site == self._config.site.id or not self._central.serves(site):
            return None  # the central's own topics, or a site it does not serve
        return _Received(message.mid, message.qos, site, what, bytes(message.payload), bool(message.retain),
                         connection=self.connections)

    @staticmethod
    def _ack(client: mqtt.Client, mid: int, qos: int) -> None:
        if PAHO2 and qos > 0:
            client.ack(mid, qos)  # paho 2.x only

    # -- the loop ----------------------------------------------------------------------------------------------

    async def _mirror(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._apply(batch)
                    break
                except Exception:  # noqa: BLE001 - the store failed (a bad message alone is dropped): try again
                    log.exception("central: %d site message(s) could not be mirrored; trying again", len(batch))
                    await asyncio.sleep(RETRY_DELAY)
            for item in batch:
                self._done(item)

    def _done(self, item: _Received) -> None:
        if item.done is not None:
            item.done.set_result(None)
        elif self._client is not None and item.connection == self.connections:
            self._ack(self._client, item.mid, item.qos)
        # Delivered on a connection since lost: the broker sends it again on the new one (mirrored again, changing
        # nothing) and that copy is acknowledged; its old mid may now name another message not yet committed.

    async def _apply(self, batch: list[_Received]) -> None:
        messages: list[SiteMessage] = []
        for item in batch:
            if item.what.startswith("media/"):
                # In order: a media file follows its event's message, which must be mirrored first.
                await self._record(messages)
                messages = []
                try:
                    await self._media(item)
                except Exception:  # noqa: BLE001 - one media message must not hold up the mirror
                    self.dropped += 1
                    log.exception("central: site %s's %s could not be taken; dropped", item.site, item.what)
                continue
            message = _parse(item)
            if message is None:
                self.dropped += 1
                continue
            messages.append(message)
        await self._record(messages)

    async def _record(self, messages: list[SiteMessage]) -> None:
        if messages:
            self.dropped += await self._changes.record(mirror_messages, messages, utcnow(), self._config.smtp.domain,
                                                       self._names)
            self.mirrored += len(messages)
            if self.on_available is not None and any(m.what == "available" for m in messages):
                self.on_available()

    async def _media(self, item: _Received) -> None:
        parts = item.what.split("/")
        if len(parts) not in (2, 3) or not parts[1].isdigit() or (len(parts) == 3 and parts[2] != "thumbnail"):
            return
        if self.on_media is not None:
            await self.on_media(item.site, int(parts[1]), len(parts) == 3, item.payload)


def _parse(item: _Received) -> SiteMessage | None:
    """The message as the mirror takes it; None (logged) when it is not what a site sends."""
    if item.what == "available":
        return SiteMessage(item.site, item.what, item.payload[:100].decode("utf-8", "replace").strip(),
                           item.retained)
    if len(item.payload) > MAX_MESSAGE:
        log.warning("central: site %s sent %s of %d bytes (at most %d); dropped", item.site, item.what,
                    len(item.payload), MAX_MESSAGE)
        return None
    try:
        body = json.loads(item.payload, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, NaN, or nested beyond what Python parses
        log.warning("central: site %s sent %s that is not JSON; dropped", item.site, item.what)
        return None
    if not isinstance(body, dict):
        log.warning("central: site %s sent %s that is not a JSON object; dropped", item.site, item.what)
        return None
    return SiteMessage(item.site, item.what, body, item.retained)


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: kept, they would make the central's own API answers unreadable.
    raise ValueError(f"{name} is not JSON")
