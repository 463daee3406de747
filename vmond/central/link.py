"""A central station's subscription to its sites (issues 18, 19): every site message mirrored, acknowledged once
stored.

Each central node keeps broker connections of its own for it (:mod:`vmond.central.sessions`): its own session
(``<central.mqtt.client_id>-<central.node>``, clean session off) subscribes with QoS 1 through the shared
subscription ``$share/<central.mqtt.share_group>/<prefix>/+/...`` to ``events``, ``alarms``, ``config``,
``status``, ``available`` and ``commands/result``, so each message goes to one node of the group and what the
sites publish while the node is down waits in its session at the broker; a second connection takes the retained
copies the broker keeps (a new central learns every site's config), and a third every site's ``media/#``, not
shared: each node caches the sites' files on its own disk, so each receives every one (:mod:`vmond.central.media`).
A node that stops cleanly leaves the group (:meth:`MirrorLink.__aexit__`), and a survivor empties a dead node's session
(:meth:`MirrorLink.adopt`).

A message is acknowledged (PUBACK) only once its change is committed, so a node killed in between gets it again
from the broker (or a survivor adopts its session). On paho 2.x that is a manual acknowledgement, and the messages
that arrived meanwhile are mirrored together in one transaction (each in a savepoint of its own: one bad message
does not fail its neighbours); paho 1.6 acknowledges when ``on_message`` returns, so there paho's thread waits for
the message's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt

from vmond.central.sessions import (
    ADOPTED,
    MEDIA,
    MEDIA_TOPICS,
    OWN,
    RETAINED,
    RETAINED_TOPICS,
    MirrorSession,
    ack,
)
from vmond.config import Config
from vmond.mqtt.client import PAHO2, LinkSettings, erase_session
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.store.sites import note_heard
from vmond.util.clock import utcnow

log = logging.getLogger(__name__)

# The broker sends at most its in-flight window of unacknowledged messages (mosquitto: 20 per client), so a batch
# is bounded by that; this is a second bound for brokers configured wider.
MAX_BATCH = 200
RETRY_DELAY = 2.0  # seconds before a batch the store refused (disk full, database busy) is tried again
CLOSING_CHECK = 1.0  # seconds: how often paho 1.6's thread, waiting for a commit, looks whether the link closes
# A site's JSON message larger than this is not one (a config of hundreds of accounts is well under): dropped unread.
MAX_MESSAGE = 4 << 20
SUBSCRIBED = ("events", "alarms", "config", "status", "available", "commands/result")
# Shared until issue 19's media fix (a file then reached one node's cache only): a session kept from before
# unsubscribes it, and an adopted one leaves it too.
DROPPED = (MEDIA_TOPICS,)
MediaHandler = Callable[[str, int, bool, bytes], Awaitable[None]]
LEGACY = "mirror"  # the one central of issue 18 subscribed as <client_id>-mirror
ADOPT_CONNECT = 10.0  # seconds to reach the broker with a dead node's client id before giving up for now


def node_client_id(client_id: str, node: str) -> str:
    """The client id of *node*'s own session (the same on every node: survivors adopt it by this name)."""
    return f"{client_id}-{node}"


def media_client_id(own_id: str) -> str:
    """The client id of a node's media session (not shared: every node receives every site's files)."""
    return f"{own_id}-media"


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
    session: MirrorSession | None = None  # the session that delivered it, to acknowledge it on


class MirrorLink:
    """``async with MirrorLink(config, db, changes, io):`` mirrors the sites' messages until the block ends."""

    def __init__(self, config: Config, db: Database, changes: Changes, io: Executor,
                 on_media: MediaHandler | None = None,
                 may_leave: Callable[[], Awaitable[bool]] | None = None,
                 stay: Callable[[], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._central = config.central
        self._prefix = config.central.mqtt.topic_prefix
        self._db, self._changes, self._io = db, changes, io
        self.on_media = on_media
        self.on_available: Callable[[], None] | None = None  # a site's available topic was mirrored (committed)
        self.listening_since: datetime | None = None  # when the link last connected; None while it is down
        self._names = {site.id: site.name for site in config.central.sites if site.name}  # over the announced
        self._node = config.central.node
        self._may_leave = may_leave  # at a clean stop: whether this node leaves the group (another is alive)
        self._stay = stay  # it was to leave but could not: its session is left to a survivor to adopt
        self._settings: LinkSettings | None = None
        self._own: MirrorSession | None = None
        self._retained: MirrorSession | None = None
        self._files: MirrorSession | None = None
        self._adopted: set[MirrorSession] = set()
        self.adopted = 0  # dead nodes' sessions emptied
        self.left: bool | None = None  # at the stop: whether the session left the group (None: still running)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Received] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.connected = self.closing = False
        self.connections = 0  # counts the broker connections made: a message's mid belongs to one of them
        self.mirrored = self.dropped = 0

    async def __aenter__(self) -> MirrorLink:
        loop = self._loop = asyncio.get_running_loop()
        link = self._central.link(self._config.mqtt)
        settings = self._settings = await loop.run_in_executor(self._io, LinkSettings.from_config, link)
        share = f"$share/{self._central.mqtt.share_group}/{self._prefix}/+"
        own_id = node_client_id(settings.client_id, self._node)
        self._worker = asyncio.create_task(self._mirror(), name="central-mirror")
        self._own = MirrorSession(OWN, dataclasses.replace(settings, client_id=own_id),
                                  [f"{share}/{what}" for what in SUBSCRIBED], self._on_message,
                                  prefix=self._prefix, node=self._node, loop=loop, on_up=self._listening,
                                  dropped=[f"{share}/{what}" for what in DROPPED])
        self._retained = MirrorSession(RETAINED, dataclasses.replace(settings, client_id=f"{own_id}-retained"),
                                       [f"{self._prefix}/+/{what}" for what in RETAINED_TOPICS], self._on_message,
                                       prefix=self._prefix, node=self._node, loop=loop)
        self._files = MirrorSession(MEDIA, dataclasses.replace(settings, client_id=media_client_id(own_id)),
                                    [f"{self._prefix}/+/{MEDIA_TOPICS}"], self._on_message,
                                    prefix=self._prefix, node=self._node, loop=loop)
        self._own.start()
        self._retained.start()
        self._files.start()
        log.info("central: mirroring the sites on %s:%d under %s/+ as %s in group %s", settings.host,
                 settings.port, self._prefix, own_id, self._central.mqtt.share_group)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in list(self._adopted):
            await session.stop()
        if self._retained is not None:
            await self._retained.stop()
        media, self._files = self._files, None
        if media is not None:
            await media.stop()
        own, self._own = self._own, None
        if own is not None:
            self.left = False
            try:
                if self._may_leave is not None and own.connected and await self._may_leave():
                    self.left = await own.leave()
                    if self.left and media is not None:  # the files sent while it is away are not kept for it
                        await asyncio.get_running_loop().run_in_executor(None, erase_session, media.settings)
                    elif not self.left and self._stay is not None:
                        await self._stay()  # a survivor adopts its session, and erases its media session too
                else:
                    log.info("central: no other node is alive: this node's session stays at the broker, "
                             "holding the sites' messages until a node is back")
            except Exception:  # noqa: BLE001 - the session then stays, to be adopted or resumed: nothing lost
                log.exception("central: could not leave the group cleanly")
            self.closing = True
            await own.stop()
        self.closing = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def adopt(self, node: str) -> bool:
        """Empty dead *node*'s session: connect with its client id, mirror and acknowledge what it holds, leave
        the group in its name and erase it. Returns whether it was erased (False: unreachable, or the node came
        back and took its client id: its session is its own again, nothing lost). *node* :data:`LEGACY` is the
        session of a central from before several nodes (``<client_id>-mirror``, not shared)."""
        assert self._settings is not None and self._loop is not None
        client_id = node_client_id(self._settings.client_id, node)
        share = (f"{self._prefix}/+" if node == LEGACY else
                 f"$share/{self._central.mqtt.share_group}/{self._prefix}/+")
        session = MirrorSession(ADOPTED, dataclasses.replace(self._settings, client_id=client_id),
                                [f"{share}/{what}" for what in (*SUBSCRIBED, *DROPPED)], self._on_message,
                                prefix=self._prefix, node=self._node, loop=self._loop)
        self._adopted.add(session)
        try:
            session.start()
            if not await session.wait_up(ADOPT_CONNECT):
                await session.stop()
                return False
            log.info("central: adopting the session of node %s (%s)", node, client_id)
            erased = await session.leave()
            if erased and node != LEGACY:
                # Its media session too: a cache, of no use to anyone else, that would fill at the broker.
                await self._loop.run_in_executor(None, erase_session, dataclasses.replace(
                    self._settings, client_id=media_client_id(client_id)))
                self.adopted += 1
                log.info("central: node %s's session emptied (%d message(s)) and erased", node, session.taken)
            return erased
        finally:
            self._adopted.discard(session)
            await session.stop()

    def status(self) -> dict[str, Any]:
        """What ``/api/health`` says of the mirror."""
        own = self._own
        return {"connected": self.connected, "mirrored": self.mirrored, "dropped": self.dropped,
                "waiting": self._queue.qsize(), "node": self._node,
                "client_id": own.settings.client_id if own is not None else None,
                "share_group": self._central.mqtt.share_group,
                "retained_connected": self._retained is not None and self._retained.connected,
                "media_connected": self._files is not None and self._files.connected,
                "adopting": len(self._adopted), "adopted": self.adopted}

    # -- paho's thread -----------------------------------------------------------------------------------------

    def _listening(self, up: bool) -> None:  # on the loop: the own session went up or down
        self.connected = up
        if up:
            self.connections += 1
        self.listening_since = utcnow() if up else None

    def _on_message(self, session: MirrorSession, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        loop = self._loop
        item = self._item(session, message)
        if item is None or loop is None:
            ack(client, message.mid, message.qos)  # not ours: nothing to keep
            return
        if not PAHO2:
            item.done = ThreadFuture()
        try:
            loop.call_soon_threadsafe(self._enqueue, item)
        except RuntimeError:  # the loop is closed: vmond is going away, and the broker delivers it again
            return
        if item.done is not None:
            self._wait_committed(item.done)

    def _enqueue(self, item: _Received) -> None:
        if item.session is not None:
            item.session.delivered()
        self._queue.put_nowait(item)

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

    def _item(self, session: MirrorSession, message: mqtt.MQTTMessage) -> _Received | None:
        """The message as the mirror takes it, from *session*'s current connection (None: not ours)."""
        item = self._received(message)
        if item is not None:
            item.session, item.connection = session, session.connections
        return item

    def _received(self, message: mqtt.MQTTMessage) -> _Received | None:
        if not message.topic.startswith(f"{self._prefix}/"):
            return None
        site, _, what = message.topic[len(self._prefix) + 1:].partition("/")
        if not what or not message.payload:  # an empty retained payload clears a topic
            return None
        if site == self._config.site.id or not self._central.serves(site):
            return None  # the central's own topics, or a site it does not serve
        return _Received(message.mid, message.qos, site, what, bytes(message.payload), bool(message.retain))

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
        session = item.session
        if item.done is not None:
            item.done.set_result(None)
        elif session is not None and session.client is not None and item.connection == session.connections:
            ack(session.client, item.mid, item.qos)
        if session is not None:
            session.committed()
        # Delivered on a connection since lost: the broker sends it again on the new one (mirrored again, changing
        # nothing) and that copy is acknowledged; its old mid may now name another message not yet committed.

    async def _apply(self, batch: list[_Received]) -> None:
        messages: list[SiteMessage] = []
        for item in batch:
            if item.what.startswith("media/"):
                # The messages before it first (its event's may be one); a file whose event is not mirrored yet
                # (taken by another node, or on this node's other connection) waits for it in CentralMedia.
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
            # PostgreSQL (several nodes): the sites' last_message_at in a short transaction after the batch's, so
            # that no batch holds the site rows every node writes. The messages are acknowledged after both.
            heard: dict[str, datetime] | None = {} if self._db.postgresql else None
            self.dropped += await self._changes.record(mirror_messages, messages, utcnow(), self._config.smtp.domain,
                                                       self._names, heard=heard)
            if heard:
                await self._db.write(note_heard, heard)
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
