"""Live updates across central nodes: what one node announces reaches the dashboards of every node.

Several central nodes share one PostgreSQL (issue 19). Each node's seam publishes a change on its own bus; this
bridge also sends it with ``NOTIFY vmond_bus`` as JSON ``{"node", "type", "data", "n"}`` (``n`` counts the
node's messages: PostgreSQL folds identical payloads of one transaction into one). Every node LISTENs and
publishes on its own bus what *other* nodes sent (its own, told by the sending connection's backend, it has
published already). A payload above
:data:`MAX_INLINE` bytes (PostgreSQL refuses 8000) is stored in the UNLOGGED table ``vmond_bus_payload`` and the
notification carries its ``ref``; receivers read it back; rows older than :data:`PAYLOAD_KEEP` seconds are pruned.

The same channel carries wake-ups: a change that queued outbox rows (commands to sites) or notification rows on
one node sends ``{"type": "wake", "data": {"queued", "notified"}}`` so the node that sends them does so at once,
not at its next poll (a node that does not hold that duty is woken harmlessly).

Nothing is silently missed: after a lost connection (PostgreSQL restarted, the network gone) the bridge
reconnects with a growing, jittered delay, and once it LISTENs again it publishes ``resync`` on its own bus (the
dashboards reload what they show, as after a replay they cannot get) and sends ``resync`` to the other nodes
(what it announced meanwhile may not have reached them). The same happens when a queue overflowed.

Threads: one thread of its own (``bus-bridge``) owns a psycopg2 connection of its own, in autocommit; it waits
in ``select`` on that connection and on a self-pipe the loop writes to when it has something to send. Both ways
are bounded: at most :data:`QUEUE_LIMIT` messages wait to be sent and as many to be published (beyond, they are
dropped and a ``resync`` goes out instead); PostgreSQL itself holds what a slow receiver has not read yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmond.store.changes import Change, Changes

log = logging.getLogger(__name__)

CHANNEL = "vmond_bus"
PAYLOAD_TABLE = "vmond_bus_payload"
MAX_INLINE = 7000  # bytes of JSON sent in the notification itself
PAYLOAD_KEEP = 60.0  # seconds a stored payload is kept for the receivers
PRUNE_EVERY = 20.0  # seconds between prunes of stored payloads, which also prove the connection alive
QUEUE_LIMIT = 2000  # messages waiting to be sent, and received messages waiting for the loop
SEND_BATCH = 100  # messages sent in one round trip (one transaction)
RECONNECT_DELAY = (0.5, 10.0)  # seconds: first wait after a failure, and the most it doubles to
CONNECT_TIMEOUT = 5  # seconds
RESYNC = "resync"  # the bus message that makes dashboards reload their state (as /ws sends it)
WAKE = "wake"
_LOCK_KEY = 0x766D6F6E64627573  # "vmondbus": one node at a time creates the payload table

_CREATE_TABLE = (
    "BEGIN; SELECT pg_advisory_xact_lock(%s); "
    f"CREATE UNLOGGED TABLE IF NOT EXISTS {PAYLOAD_TABLE} (id BIGSERIAL PRIMARY KEY, "
    "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), body TEXT NOT NULL); COMMIT"
)
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', %s)"
_NOTIFY_STORED = (
    f"WITH stored AS (INSERT INTO {PAYLOAD_TABLE} (body) VALUES (%s) RETURNING id) "
    f"SELECT pg_notify('{CHANNEL}', json_build_object('node', %s::text, 'ref', id, 'n', %s::bigint)::text) "
    "FROM stored"
)
_PRUNE = f"DELETE FROM {PAYLOAD_TABLE} WHERE created_at < now() - make_interval(secs => %s)"
_READ_STORED = f"SELECT body FROM {PAYLOAD_TABLE} WHERE id = %s"


class BusBridge:
    """The bridge of one node: ``async with BusBridge(dsn, node, changes): ...`` (see the module's docstring).

    *dsn* is a libpq connection string or URL without a password; *password* comes from the configuration's
    password file. :attr:`listening` is set while the bridge LISTENs (tests wait for it)."""

    def __init__(self, dsn: str, node: str, changes: Changes, *, password: str | None = None) -> None:
        self._dsn = dsn
        self._password = password
        self.node = node
        self._changes = changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._outgoing: deque[str | tuple[str, int]] = deque()  # a notification's JSON, or a stored body + n
        self._incoming: deque[tuple[str, str, dict[str, Any]]] = deque()  # (node, type, data)
        self._handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._lost_outgoing = False  # something meant for the other nodes was dropped: they must resync
        self._lost_incoming = False  # something from the other nodes was dropped here: our dashboards resync
        self._counter = 0
        self._backend = 0  # the PostgreSQL backend of the bridge's connection
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self.listening = asyncio.Event()
        self.sent = self.received = self.dropped = self.reconnects = 0

    async def __aenter__(self) -> BusBridge:
        self._loop = asyncio.get_running_loop()
        self._changes.on_announced(self._announced)
        self._thread = threading.Thread(target=self._run, name="bus-bridge", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._poke()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._closed = True
        os.close(self._wake_read)
        os.close(self._wake_write)

    def status(self) -> dict[str, Any]:
        """For ``/api/health``: listening now, messages sent and received, dropped, and reconnections since start."""
        return {"listening": self.listening.is_set(), "sent": self.sent, "received": self.received,
                "dropped": self.dropped, "reconnects": self.reconnects}

    # --- on the loop ------------------------------------------------------------------------------------------

    def _announced(self, change: Change) -> None:
        """The seam's hook: tell the other nodes what this node just published and whom it woke."""
        for item in change.announcements:
            self._send(item.type, item.data)
        if change.queued or change.notified:
            self._send(WAKE, {"queued": bool(change.queued), "notified": bool(change.notified)})

    def on_message(self, type_: str, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """Hand messages of *type_* from other nodes to ``handler(node, data)`` (on the loop) instead of the bus:
        news between the nodes themselves, such as who has which alarm open."""
        self._handlers[type_] = handler

    def share(self, type_: str, data: dict[str, Any]) -> None:
        """Send *data* as *type_* to the other nodes only (not on this node's bus; see :meth:`on_message`)."""
        self._send(type_, data)

    def _send(self, type_: str, data: dict[str, Any]) -> None:
        if self._closed:
            return
        self._counter += 1
        try:
            text = json.dumps({"node": self.node, "type": type_, "data": data, "n": self._counter},
                              separators=(",", ":"))
        except (TypeError, ValueError):  # never the seam's caller's problem: the others resync instead
            log.exception("could not send %s to the other central nodes", type_)
            with self._lock:
                self.dropped += 1
                self._lost_outgoing = True
            self._poke()
            return
        entry: str | tuple[str, int] = text if len(text) <= MAX_INLINE else (text, self._counter)
        with self._lock:
            if len(self._outgoing) >= QUEUE_LIMIT:
                self.dropped += 1
                self._lost_outgoing = True
                return
            self._outgoing.append(entry)
        self._poke()

    def _poke(self) -> None:
        if self._closed:
            return  # announced after the bridge stopped: the pipe's descriptors may belong to someone else now
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the thread will look anyway) or already closed at shutdown

    def _deliver(self) -> None:
        """Publish on this node's bus what the thread received; ``resync`` when some of it was dropped."""
        with self._lock:
            items = list(self._incoming)
            self._incoming.clear()
            lost, self._lost_incoming = self._lost_incoming, False
        for node, type_, data in items:
            if (handler := self._handlers.get(type_)) is not None:
                handler(node, data)
            elif type_ == WAKE:
                self._changes.wake(queued=bool(data.get("queued")), notified=bool(data.get("notified")))
            else:
                self._changes.publish_remote(type_, data)
        if lost:
            self._changes.publish_remote(RESYNC, {})

    def _listening_again(self, reconnected: bool) -> None:
        self.listening.set()
        if reconnected:
            self.reconnects += 1
            log.info("the live bridge to the other central nodes is back: dashboards reload what they show")
            self._changes.publish_remote(RESYNC, {})  # what the others sent meanwhile did not reach us
            self._send(RESYNC, {})  # what we sent meanwhile may not have reached them

    # --- on the bridge's thread -------------------------------------------------------------------------------

    def _in_loop(self, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop closed while stopping

    def _run(self) -> None:
        import psycopg2  # only a central on PostgreSQL needs it (Debian: python3-psycopg2)

        delay = RECONNECT_DELAY[0]
        connected_before = False
        said_down = False
        while not self._stopping.is_set():
            try:
                conn = psycopg2.connect(self._dsn, password=self._password, connect_timeout=CONNECT_TIMEOUT,
                                        application_name=f"vmond-bus-{self.node}"[:63], keepalives=1,
                                        keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
            except psycopg2.Error as exc:
                if not said_down:
                    log.warning("the live bridge cannot reach PostgreSQL (%s); retrying",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                    said_down = True
                self._stopping.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RECONNECT_DELAY[1])
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute(_CREATE_TABLE, (_LOCK_KEY,))
                    cursor.execute(f"LISTEN {CHANNEL}")
                delay, said_down = RECONNECT_DELAY[0], False
                self._in_loop(self._listening_again, connected_before)
                connected_before = True
                self._serve(conn)
            except psycopg2.Error as exc:
                log.warning("the live bridge lost its PostgreSQL connection (%s); reconnecting",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                said_down = True
            except Exception:  # noqa: BLE001 - the bridge must outlive its own mistakes: connect afresh
                log.exception("the live bridge failed; reconnecting")
                said_down = True
                with self._lock:
                    self._lost_outgoing = True
                self._stopping.wait(delay)
            finally:
                self._in_loop(self.listening.clear)
                conn.close()

    def _serve(self, conn: Any) -> None:
        self._backend = conn.get_backend_pid()  # what this connection sends comes back from this backend
        pruned = 0.0
        while not self._stopping.is_set():
            self._send_waiting(conn)
            if time.monotonic() - pruned >= PRUNE_EVERY:
                with conn.cursor() as cursor:
                    cursor.execute(_PRUNE, (PAYLOAD_KEEP,))
                pruned = time.monotonic()
            # What came in while our own statements ran is already read off the socket: select would not wake.
            self._take_notifications(conn)
            readable, _, _ = select.select([conn, self._wake_read], [], [], PRUNE_EVERY)
            if self._wake_read in readable:
                try:
                    while os.read(self._wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass
            conn.poll()
            self._take_notifications(conn)
        self._send_waiting(conn)  # what the node announced last still goes out

    def _send_waiting(self, conn: Any) -> None:
        while True:
            with self._lock:
                if self._lost_outgoing:
                    self._lost_outgoing = False
                    self._outgoing.append(json.dumps({"node": self.node, "type": RESYNC, "data": {}, "n": 0}))
                batch = [self._outgoing.popleft() for _ in range(min(SEND_BATCH, len(self._outgoing)))]
            if not batch:
                return
            statements: list[str] = []
            params: list[str | int] = []
            for entry in batch:
                if isinstance(entry, str):
                    statements.append(_NOTIFY)
                    params.append(entry)
                else:
                    statements.append(_NOTIFY_STORED)
                    params.extend((entry[0], self.node, entry[1]))
            try:
                with conn.cursor() as cursor:
                    cursor.execute("; ".join(statements), params)  # one round trip, one transaction, in order
            except Exception:
                with self._lock:
                    self._lost_outgoing = True  # perhaps not sent: the others resync once we are back
                raise
            self.sent += len(batch)

    def _take_notifications(self, conn: Any) -> None:
        while conn.notifies:
            notification = conn.notifies.pop(0)
            if notification.channel != CHANNEL or notification.pid == self._backend:
                continue  # ours: published on this node's bus already
            message = self._decode(conn, notification.payload)
            if message is None:
                continue
            self.received += 1
            with self._lock:
                if len(self._incoming) >= QUEUE_LIMIT:
                    self.dropped += 1
                    self._lost_incoming = True
                    continue
                first = not self._incoming and not self._lost_incoming
                self._incoming.append(message)
            if first:
                self._in_loop(self._deliver)

    def _decode(self, conn: Any, payload: str) -> tuple[str, str, dict[str, Any]] | None:
        """The (node, type, data) another node sent, or None (our own, or not ours to read); a stored payload that is
        gone already (pruned, a receiver that fell a minute behind) becomes a ``resync``."""
        try:
            message = json.loads(payload)
            if "ref" in message:
                with conn.cursor() as cursor:
                    cursor.execute(_READ_STORED, (int(message["ref"]),))
                    row = cursor.fetchone()
                if row is None:
                    log.warning("a large live message from node %s was gone before it was read: resync",
                                message.get("node"))
                    return (str(message.get("node")), RESYNC, {})
                message = json.loads(row[0])
            node, type_, data = message["node"], message["type"], message["data"]
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed message on the %s channel", CHANNEL)
            return None
        if not isinstance(node, str) or not isinstance(type_, str) or not isinstance(data, dict):
            log.warning("ignored a malformed message on the %s channel", CHANNEL)
            return None
        return (node, type_, data)
