"""A central node among several (issue 19): its ``node:<name>`` lease, and the duties it runs while it holds their
leases.

Every node renews its leases every :data:`RENEW` seconds in one transaction (:func:`vmond.store.leases.hold`):
``node:<central.node>`` (it is alive) and each duty registered with :meth:`Node.add` that it can get
(``duty:sitewatch``, ``duty:outbox``, ``duty:notify``). A lease not renewed for :data:`TTL` seconds (by the
database's clock) is free for another node, so a dead node's duties move to a survivor within about
``TTL + RENEW`` seconds. A node that cannot renew (the database unreachable, the writer stuck) stops its duties
once :data:`STOP_AFTER` seconds have passed since the start of its last successful renewal: before the lease
could expire, so two nodes never run one duty at the same time (as long as stopping takes less than
``TTL - STOP_AFTER`` seconds and the process is not frozen meanwhile). A node that stops cleanly releases its duty
leases, and another takes them at its next renewal.

Two processes must never run as one node (the name is the holder of the node's leases and part of its MQTT
client id): each process also holds ``instance:<central.node>`` under a random token. A process that finds it
held by another waits up to :data:`STOP_AFTER` seconds, keeping the node lease alive meanwhile: if the other
renews it, a second node is configured with this name and the start fails (:class:`NodeNameTaken`); if not, it
was this node's predecessor, killed, and the new process takes over its leases and broker session.

A duty is an async context factory: entered when the lease is taken, left when it is lost or the node stops.
:meth:`Node.wake` lets another part (a cross-node wake-up) poke a duty that runs on this node. Runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from vmond.store import leases
from vmond.store.db import Database

log = logging.getLogger(__name__)

RENEW = 2.0  # seconds between renewals of a node's leases
TTL = 10.0  # seconds a lease lasts without renewal (by the database's clock): then another node takes it
STOP_AFTER = 6.0  # seconds without a successful renewal after which a node stops its duties (TTL minus margin)
STOP_TIMEOUT = 3.0  # seconds a duty may take to stop before it is abandoned (its task cancelled)

SITEWATCH, OUTBOX, NOTIFY = "duty:sitewatch", "duty:outbox", "duty:notify"


@dataclass
class Duty:
    """One duty: its lease's name, how to start it, what to call to wake it, and its running state here."""

    name: str
    start: Callable[[], AbstractAsyncContextManager[Any]]
    on_start: Callable[[Any], None] | None = None  # told the running object (e.g. to hand it to the web app)
    on_stop: Callable[[], None] | None = None
    wake: Callable[[Any], None] | None = None  # how to poke the running object
    running: Any = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float | None = None


class NodeNameTaken(RuntimeError):
    """Another running process is central node *name*: each node needs a ``central.node`` of its own."""


class Node:
    """``async with Node(db, name) as node:`` holds ``node:<name>`` and runs the duties added with :meth:`add`
    while their leases are this node's."""

    def __init__(self, db: Database, name: str, *, renew: float = RENEW, ttl: float = TTL,
                 stop_after: float = STOP_AFTER) -> None:
        self._db = db
        self.name = name
        self.lease = leases.NODE + name
        self._renew, self._ttl, self._stop_after = renew, ttl, stop_after
        self._duties: dict[str, Duty] = {}
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self._left = False  # the node lease was given up (a clean leave): no more renewing it
        self._token = secrets.token_hex(8)  # this process, as the holder of instance:<name>
        self.displaced = False  # another process took instance:<name>: this one runs no duty any more
        self.renewed_at: float | None = None  # monotonic start of the last successful renewal
        self.renew_failures = 0

    async def __aenter__(self) -> Node:
        await self._claim()
        self.renewed_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="central-node")
        log.info("central node %s: up (leases renewed every %.0f s, lost after %.0f s)", self.name, self._renew,
                 self._ttl)
        return self

    async def _claim(self) -> None:
        """Take ``instance:<name>`` (and keep the node lease alive), waiting out a predecessor's (see above)."""
        other: str | None = None
        force, waited_since = False, time.monotonic()
        while True:
            try:
                held_until = await self._db.write(leases.claim_instance, self.name, self._token, self._ttl,
                                                  force=force)
            except Exception:  # noqa: BLE001 - the database not there yet: try again
                log.exception("central node %s: cannot take its lease; trying again", self.name)
                await asyncio.sleep(self._renew)
                continue
            if held_until is None:
                return
            if other is None:
                other = held_until
                log.warning("central node %s: another process holds this node's name; waiting up to %.0f s to "
                            "see whether it is still alive (after a crash it is not)", self.name, self._stop_after)
            elif held_until != other:
                raise NodeNameTaken(f"another process is running as central node {self.name!r} (it renewed "
                                    "its lease just now): give each node its own `central.node` (the default "
                                    "is the host's name)")
            force = time.monotonic() - waited_since >= self._stop_after
            if force:
                log.info("central node %s: its predecessor showed no sign of life; taking over", self.name)
            else:
                await asyncio.sleep(self._renew / 4)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for duty in self._duties.values():
            await self._stop(duty)
        with contextlib.suppress(Exception):  # another node takes them at once, not after TTL
            await self._db.write(leases.release, list(self._duties), self.name)
            await self._db.write(leases.release, [leases.INSTANCE + self.name], self._token)

    def add(self, name: str, start: Callable[[], AbstractAsyncContextManager[Any]], *,
            on_start: Callable[[Any], None] | None = None, on_stop: Callable[[], None] | None = None,
            wake: Callable[[Any], None] | None = None) -> Duty:
        """Run *start()*'s context while this node holds lease *name*; taken at the next renewal (soon)."""
        duty = self._duties[name] = Duty(name, start, on_start, on_stop, wake)
        self._tick.set()
        return duty

    def wake(self, name: str) -> bool:
        """Poke duty *name* if it runs on this node (e.g. "a command was queued on another node"); returns
        whether it runs here."""
        duty = self._duties.get(name)
        if duty is None or duty.running is None:
            return False
        if duty.wake is not None:
            duty.wake(duty.running)
        return True

    def waker(self, name: str) -> Callable[[], None]:
        """A callback that wakes duty *name* wherever it is registered from (the seam's ``on_queued``)."""
        def wake() -> None:
            self.wake(name)
        return wake

    def holds(self, name: str) -> bool:
        duty = self._duties.get(name)
        return duty is not None and duty.running is not None

    async def leave(self) -> bool:
        """Give up the node lease if another node is alive (it then adopts nothing: this node's broker session
        is erased by the caller); the last node alive keeps its lease, to expire, and its session. Returns
        whether the node left."""
        left = bool(await self._db.write(leases.leave, self.lease, self.name, leases.NODE))
        self._left = left
        return left

    async def stay(self) -> None:
        """The node left (:meth:`leave`) but its session could not be erased: its node lease back, expired, so a
        survivor adopts the session."""
        await self._db.write(leases.abandon, self.lease, self.name)

    async def status(self) -> dict[str, Any]:
        """What ``/api/health`` says: this node, and who holds each lease (from the database)."""
        held = await self._db.read(leases.holders)
        return {"node": self.name, "here": sorted(n for n, d in self._duties.items() if d.running is not None),
                "leases": held, "displaced": self.displaced,
                "renewed_s_ago": None if self.renewed_at is None else round(time.monotonic() - self.renewed_at, 1)}

    # -- the renewal loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            names = [name for name in ([] if self._left else [self.lease])] + list(self._duties)
            try:
                async with asyncio.timeout(self._stop_after):
                    held = await self._db.write(leases.renew_node, names, self.name, self._token, self._ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database away or stuck: the duties stop in time
                self.renew_failures += 1
                log.warning("central node %s: could not renew its leases: %s: %s", self.name, type(exc).__name__,
                            exc)
                held = None
            else:
                if held is None:  # another process runs as this node now: it has the duties
                    if not self.displaced:
                        log.error("central node %s: another process took over this node's name; this one stops "
                                  "its duties (give each node its own `central.node`, and stop this one)",
                                  self.name)
                    self.displaced, held = True, set()
                elif self.displaced:  # the other process has gone (stopped cleanly, or its lease expired)
                    log.warning("central node %s: runs as this node again", self.name)
                    self.displaced = False
                self.renewed_at = started
            for duty in self._duties.values():
                if held is not None and duty.name in held:
                    if duty.task is None or duty.task.done():  # not running, or it failed: (re)start
                        self._start(duty)
                elif held is not None or (self.renewed_at is None
                                          or time.monotonic() - self.renewed_at > self._stop_after):
                    await self._stop(duty)
            self._tick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._renew - (time.monotonic() - started))):
                    await self._tick.wait()

    def _start(self, duty: Duty) -> None:
        duty.stop = asyncio.Event()
        duty.task = asyncio.create_task(self._hold(duty), name=duty.name)

    async def _hold(self, duty: Duty) -> None:
        log.info("central node %s: took %s", self.name, duty.name)
        try:
            async with duty.start() as running:
                duty.running, duty.started_at = running, time.monotonic()
                if duty.on_start is not None:
                    duty.on_start(running)
                try:
                    await duty.stop.wait()
                finally:
                    duty.running = None
                    if duty.on_stop is not None:
                        duty.on_stop()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged; the lease is given up so another node may try
            log.exception("central node %s: %s failed", self.name, duty.name)
            with contextlib.suppress(Exception):
                await self._db.write(leases.release, [duty.name], self.name)
        finally:
            log.info("central node %s: gave up %s", self.name, duty.name)

    async def _stop(self, duty: Duty) -> None:
        task, duty.task = duty.task, None
        if task is None:
            return
        duty.stop.set()
        done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT)
        if not done:
            log.warning("central node %s: %s did not stop in %.0f s; cancelled", self.name, duty.name, STOP_TIMEOUT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
