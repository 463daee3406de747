"""The broker connections a central node mirrors through (issue 19), each a :class:`MirrorSession`:

- **own**: ``<central.mqtt.client_id>-<central.node>``, clean session off, subscribed through the shared
  subscription ``$share/<central.mqtt.share_group>/<prefix>/+/...``: the broker hands each site message to one
  node of the group, and keeps what arrives for this node while it is away.
- **retained**: ``<client_id>-<node>-retained``, clean session on, subscribed (not shared) to the retained
  ``config``, ``status`` and ``available`` topics, and taking only the copies the broker kept (the retain flag
  set, MQTT 3.1.1 §3.3.1.3): MQTT 5 says a shared subscription gets no retained messages (mosquitto 2.0 sends
  them anyway, to every member: the own session leaves them to this one), and a new central needs every site's
  config. The live copies of those topics come through the shared subscription, to one node.
- **adopted**: a dead node's client id, clean session off: what its session holds is mirrored here, then the
  session is erased (see :meth:`MirrorSession.leave`).

A session leaves the group cleanly by :meth:`MirrorSession.leave`: it subscribes to a marker topic of its own,
UNSUBSCRIBEs the shared topics (the broker routes nothing more to it), publishes a marker, mirrors and
acknowledges everything that arrives before the marker (what the session held comes first), waits until nothing
it delivered is still uncommitted, disconnects, and connects once more with clean session on (the session, and
its place in the group, are gone).

paho's callbacks run on its thread; the counts and events below are the loop's (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from vmond.mqtt.client import PAHO2, LinkSettings, connected_ok, erase_session, session_client, stop_client

log = logging.getLogger(__name__)

OWN, RETAINED, ADOPTED = "own", "retained", "adopted"
RETAINED_TOPICS = ("config", "status", "available")
DRAIN_QUIET = 30.0  # seconds without any message after which a drain that never saw its marker gives up
STOP_WAIT = 10.0  # seconds for paho's thread to stop

Sink = Callable[["MirrorSession", mqtt.Client, mqtt.MQTTMessage], None]  # called on paho's thread


def ack(client: mqtt.Client, mid: int, qos: int) -> None:
    if PAHO2 and qos > 0:
        client.ack(mid, qos)  # paho 2.x only; 1.6 acknowledges when on_message returns


class MirrorSession:
    """One broker connection that hands site messages to *sink* (on paho's thread)."""

    def __init__(self, kind: str, settings: LinkSettings, topics: list[str], sink: Sink, *, prefix: str,
                 node: str, loop: asyncio.AbstractEventLoop,
                 on_up: Callable[[bool], None] | None = None) -> None:
        self.kind = kind
        self.settings = settings
        self.topics = topics
        self._sink = sink
        self._loop = loop
        self._on_up = on_up
        self.marker = f"{prefix}/_drain-{node}-{uuid.uuid4().hex[:12]}/commands"  # no site id has a _
        self.client: mqtt.Client | None = None
        self.connected = False
        self.connections = 0  # counts connections: a message's mid belongs to one of them
        self.outstanding = 0  # delivered to the mirror, not yet committed (the loop's count)
        self.taken = 0  # messages handed to the mirror (the loop's count)
        self.leaving = False
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._marker_seen = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_message = time.monotonic()

    def start(self) -> None:
        self.client = session_client(self.settings, self._on_connect, self._on_message,
                                     on_disconnect=self._on_disconnect, manual_ack=PAHO2,
                                     clean_session=self.kind == RETAINED)

    async def stop(self) -> None:
        """Disconnect without leaving (the session stays, with its subscription)."""
        client, self.client = self.client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(stop_client, client))

    # -- the loop's side of the counts -------------------------------------------------------------------

    def delivered(self) -> None:
        self.outstanding += 1
        self.taken += 1
        self.last_message = time.monotonic()
        self._idle.clear()

    def committed(self) -> None:
        self.outstanding -= 1
        if self.outstanding <= 0:
            self.outstanding = 0
            self._idle.set()

    # -- paho's thread -----------------------------------------------------------------------------------

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: vmond is going away
            self._loop.call_soon_threadsafe(method, *args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if not connected_ok(rc):
            return
        self.connections += 1
        self.connected = True
        if self.kind != ADOPTED and not self.leaving:
            # own: the session keeps the subscriptions, made again in case the broker lost it; retained: a clean
            # session, so the broker hands over its kept copies again at every connect.
            client.subscribe([(topic, 1) for topic in self.topics])
        self._call(self._connected, True)

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        self.connected = False
        if self.kind == ADOPTED and not self.leaving:
            # Lost while adopting: the node came back and took its client id (or the broker went away). Never
            # reconnect: that would take the session from its owner. What was not acknowledged stays there.
            client.disconnect()
        self._call(self._connected, False)

    def _connected(self, up: bool) -> None:
        if up:
            self._up.set()
            self._lost.clear()
        else:
            self._up.clear()
            self._lost.set()
        if self._on_up is not None:
            self._on_up(up)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.marker:
            ack(client, message.mid, message.qos)
            self._call(self._marker_seen.set)
            return
        self._call(self._seen)
        if (self.kind == RETAINED) != bool(message.retain):
            # The retained session takes only the broker's kept copies; the others leave those to it.
            ack(client, message.mid, message.qos)
            return
        self._sink(self, client, message)

    def _seen(self) -> None:
        self.last_message = time.monotonic()

    # -- leaving -----------------------------------------------------------------------------------------

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._up.wait()
                return True
        return False

    async def leave(self) -> bool:
        """Leave the group: no more messages routed here, what the session holds mirrored and acknowledged,
        then the session erased. Returns False (the session kept) when the connection was lost on the way or
        the drain made no progress for :data:`DRAIN_QUIET` seconds."""
        client = self.client
        if client is None or not self.connected:
            return False
        self.leaving = True
        self._marker_seen.clear()
        client.subscribe(self.marker, 1)
        client.unsubscribe(self.topics)
        client.publish(self.marker, b"drain", qos=1)
        self.last_message = time.monotonic()
        while not self._marker_seen.is_set():
            if self._lost.is_set() or time.monotonic() - self.last_message > DRAIN_QUIET:
                log.warning("central: leaving session %s: %s", self.settings.client_id,
                            "connection lost" if self._lost.is_set() else "no progress; kept")
                await self.stop()
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._marker_seen.wait()
        while not self._idle.is_set():  # everything delivered before the marker committed and acknowledged
            if self._lost.is_set():
                await self.stop()
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._idle.wait()
        await self.stop()
        erased = await asyncio.get_running_loop().run_in_executor(None, erase_session, self.settings)
        log.info("central: session %s left the group (%d message(s) taken)%s", self.settings.client_id,
                 self.taken, "" if erased else "; the broker could not be reached to erase it")
        return erased
