"""Adopting a dead central node's broker session (issue 19).

mosquitto (2.0, measured) does not hand a shared-subscription member's unacknowledged messages to another member
when it dies: with clean session off they stay in the dead member's session, and the group's round robin keeps
routing new messages to that offline session. So a survivor empties it: once the dead node's ``node:<name>``
lease has expired, one node takes ``adopt:<name>`` (in the same transaction that sees the node lease expired),
connects with the dead node's client id and leaves the group in its name (:meth:`MirrorLink.adopt`): what the
session held is mirrored and acknowledged, the broker stops routing to it, the session is erased, and the dead
node's lease row is removed. A node that comes back meanwhile takes its client id back (the broker disconnects
the adopter, whose unacknowledged messages stay in the session) and waits, before connecting, while another node
holds ``adopt:<name>`` (:func:`wait_not_adopted`).

The session a central from before several nodes left (``<client_id>-mirror``, subscribed without sharing) is
emptied the same way when a node starts: what the sites published while the central was upgraded is not lost.

Runs on the loop; looks for dead nodes every :data:`vmond.central.duties.RENEW` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from vmond.central.duties import RENEW, TTL
from vmond.central.link import LEGACY, MirrorLink
from vmond.store import leases
from vmond.store.db import Database
from vmond.util.tasks import BackgroundService

log = logging.getLogger(__name__)

WAIT_ADOPTED = 60.0  # seconds a returning node waits for a survivor still emptying its session


class Adopter(BackgroundService):
    """``async with Adopter(db, node, mirror):`` adopts dead nodes' sessions until the block ends."""

    task_name = "central-adopter"

    def __init__(self, db: Database, node: str, mirror: MirrorLink, *, interval: float = RENEW,
                 ttl: float = TTL) -> None:
        self._db = db
        self._node = node
        self._mirror = mirror
        self._interval, self._ttl = interval, ttl
        self.adopted: list[str] = []

    async def _run(self) -> None:
        if self._node != LEGACY:  # a central from before several nodes may have left its session behind
            try:
                if await self._db.write(leases.hold, [leases.ADOPT + LEGACY], self._node, self._ttl):
                    await self._adopt(LEGACY)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the broker away: the old session waits for the next start
                log.exception("central: the session of the central before several nodes could not be emptied")
        while True:
            try:
                for dead in await self._db.read(leases.expired_nodes):
                    if dead != self._node and await self._db.write(leases.take_adoption, dead, self._node,
                                                                   self._ttl):
                        await self._adopt(dead)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database or the broker away: looked at again shortly
                log.exception("central: looking for dead nodes' sessions failed; trying again")
            await asyncio.sleep(self._interval)

    async def _adopt(self, dead: str) -> None:
        lease = leases.ADOPT + dead
        renewing = asyncio.create_task(self._renew(lease), name="central-adopt-lease")
        erased = False
        try:
            erased = await self._mirror.adopt(dead)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self._db.write(leases.adopted, dead, self._node, erased)
        if erased:
            self.adopted.append(dead)

    async def _renew(self, lease: str) -> None:
        while True:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(Exception):  # noqa: BLE001 - tried again at the next interval
                await self._db.write(leases.hold, [lease], self._node, self._ttl)


async def wait_not_adopted(db: Database, node: str, timeout: float = WAIT_ADOPTED) -> None:
    """Before a node connects its own session: wait while a survivor is still emptying it (at most *timeout*)."""
    deadline = time.monotonic() + timeout
    while (holder := await db.read(leases.holder, leases.ADOPT + node)) is not None and holder != node:
        if time.monotonic() > deadline:
            log.warning("central: node %s is still adopting this node's session; connecting anyway", holder)
            return
        await asyncio.sleep(0.5)
