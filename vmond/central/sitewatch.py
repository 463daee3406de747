"""A central station's site supervision (issue 18): one background task raising and closing ``site_offline``.

:func:`vmond.store.supervision.check_sites` does the work through the seam, as the appliance's watcher
(:mod:`vmond.supervision.watcher`) does for silent cameras: a site whose ``available`` says ``offline`` (the
broker's last will when an edge dies) or that sent nothing for ``central.site_silence`` gets one supervision
event on the central's wall; the site online and sending again closes it. The clock is the stored
``last_message_at``, so a restart neither forgets a loss nor raises it twice; silence is only counted while the
central's own link to the broker is up (it cannot hear a site while it is not listening).

The store is read when the next site may fall silent (it says when), at least every :data:`RECHECK` seconds,
and at once when :meth:`SiteWatcher.nudge` says an ``available`` message arrived (so an edge's last will shows
within a moment, not at the next round). Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from vmond.store.sites import ensure_sites
from vmond.store.supervision import check_sites, sites_due
from vmond.util.clock import utcnow
from vmond.util.tasks import BackgroundService

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.store.changes import Changes
    from vmond.store.db import Database

log = logging.getLogger(__name__)

RECHECK = 5.0  # seconds: the sites are read at least this often
MIN_WAIT = 0.1  # never spin: a moment already past is looked at again after this
RETRY = 2.0  # seconds after a check that failed (the database busy or full)


class SiteWatcher(BackgroundService):
    """``async with SiteWatcher(config, db, changes, listening_since):`` supervises the sites until the block ends.

    *listening_since* tells since when the central's link to the broker is up (None: down now)."""

    task_name = "site-supervision"

    def __init__(self, config: Config, db: Database, changes: Changes,
                 listening_since: Callable[[], datetime | None], *, recheck: float = RECHECK) -> None:
        self._config = config
        self._db = db
        self._changes = changes
        self._listening_since = listening_since
        self._recheck = recheck
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """A site's ``available`` changed: look at the sites now."""
        self._wake.set()

    async def _run(self) -> None:
        listed = [(site.id, site.name) for site in self._config.central.sites]
        while True:
            try:  # the sites listed in the configuration are supervised from the start, heard from or not
                await self._db.write(ensure_sites, listed)
                break
            except Exception:  # noqa: BLE001 - the database full or locked: try again shortly
                log.exception("site supervision: the configured sites could not be noted; trying again shortly")
                await asyncio.sleep(RETRY)
        while True:
            self._wake.clear()
            try:
                wait = await self._check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database full or locked: try again shortly
                log.exception("site supervision: a check failed; trying again shortly")
                wait = RETRY
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(MIN_WAIT, wait))

    async def _check(self) -> float:
        """Returns the seconds until a site may next fall silent (at most the recheck interval)."""
        silence = self._config.central.site_silence
        since = self._listening_since()
        due, next_due = await self._db.read(sites_due, silence, since)
        if due:
            changed = await self._changes.record(check_sites, self._config.smtp.domain, silence, since,
                                                 self._config.events.priorities, zone=self._config.site.timezone)
            for event in changed:
                site = (event.get("site") or {}).get("id")
                if "cleared" not in event["flags"]:
                    log.warning("site supervision: site %s offline (event %d): %s", site, event["id"],
                                event["subject"])
                else:
                    log.info("site supervision: site %s is back (event %d closed)", site, event["id"])
            due, next_due = await self._db.read(sites_due, silence, since)
        if next_due is None:
            return self._recheck
        return min(self._recheck, max(0.0, (next_due - utcnow()).total_seconds()))
