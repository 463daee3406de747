"""The disk keeper: a background task that enforces ``storage.max_media_size``, ``storage.retention``,
``storage.min_free_space`` and ``storage.audit_retention``, removing the media of the oldest closed events first
(see :mod:`vmond.store.retention` for what may go), and gives the database's free pages back afterwards.

The media store counts every file as it is written (:class:`vmond.media.usage.MediaUsage`), and a write that
takes media over the quota wakes the keeper at once; writers of media call :meth:`DiskKeeper.make_room` first,
which waits (briefly) for that round while media are over the quota. So media exceed the quota by about one
event's media at most, and a round frees down to ``LOW_WATER`` of it, so that not every mail starts one. A wake-up
during a round starts one more round after it, never a second one at the same time. Below ``min_free_space``
the SMTP door also answers 452 4.3.1 on its own, so cameras retry later instead of losing alarms.

Everything here runs on the event loop but waits only: file work on I/O threads, SQL on the database threads.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from vmond.config.types import format_duration
from vmond.store.compact import page_counts, return_free_pages
from vmond.store.retention import (
    drop_media,
    expire_audit,
    expired_dismissed,
    oldest_media_sizes,
    oldest_with_media,
    orphaned_event_audit,
)
from vmond.util.clock import utcnow
from vmond.util.tasks import BackgroundService

if TYPE_CHECKING:
    from datetime import datetime

    from vmond.config import Config
    from vmond.media.store import MediaStore
    from vmond.store.db import Database

log = logging.getLogger(__name__)

INTERVAL = 300.0  # seconds between rounds; a round also runs when media go over the quota or the disk gets low
BATCH = 20  # events per database transaction
HEADROOM = 1.1  # free this much more than min_free_space, so that one mail does not start the next round
LOW_WATER = 0.98  # share of the quota a round frees down to: a round every 2% of the quota, not every mail
ROOM_WAIT = 10.0  # seconds a writer waits for room; then it writes anyway (an alarm is never held back long)
STUCK_PAUSE = 10.0  # seconds between rounds while media are over the quota and nothing more may go
QUOTA_LOG_EVERY = 60.0  # seconds: removals for the quota are summed up in one log line at most this often
AUDIT_BATCH = 1000  # audit entries per transaction
FREE_SHARE = 0.1  # give free database pages back once they are this share of the file ...
MIN_FREE_PAGES = 256  # ... and at least this many
PAGES_PER_STEP = 2048  # pages given back per transaction


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class DiskKeeper(BackgroundService):
    task_name = "disk keeper"

    def __init__(self, config: Config, db: Database, media: MediaStore, io: Executor,
                 free_to: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._storage = config.storage
        self._db = db
        self._media = media
        self._usage = media.usage
        # A central station's media are a cache of its sites' (issue 18): its bound, and *free_to* frees room
        # (the least recently served go) instead of the media of the oldest events.
        self._quota_key = "central.media_cache" if free_to is not None else "storage.max_media_size"
        self._quota = config.central.media_cache if free_to is not None else config.storage.max_media_size
        self._free_to = free_to
        self._usage.quota = self._quota
        self._io = io
        self._wake = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._waiters: list[asyncio.Future[None]] = []  # writers waiting for room (make_room)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stuck = False  # over the quota, and everything left belongs to open or undelivered events
        self._orphans_checked = False
        self._quota_removed = 0
        self._quota_logged = time.monotonic() - QUOTA_LOG_EVERY  # the first removals are told at once
        self.freed_bytes = 0
        self.low = False

    async def __aenter__(self) -> DiskKeeper:
        self._loop = asyncio.get_running_loop()
        self._usage.on_over = self._over_quota
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._usage.on_over = None
        self._usage.stop_measuring()  # a walk of a big media directory must not hold up the stop
        await super().__aexit__(*exc_info)
        self._release(self._waiters)

    def _over_quota(self) -> None:
        """Called by the media store, on the thread that wrote, when media went over the quota."""
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass  # the loop has closed: the daemon is stopping

    def nudge(self) -> None:
        """Run a round now (the SMTP door calls this when it had to answer 452)."""
        self._wake.set()

    async def make_room(self) -> None:
        """Writers call this before they store media: while media are over the quota, wait (at most
        ``ROOM_WAIT``) for the round that removes the oldest. Returns at once when nothing may go anyway."""
        if self._stuck or not self._usage.over_quota() or self._loop is None:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            async with asyncio.timeout(ROOM_WAIT):
                await waiter
        except TimeoutError:
            log.warning("media are over storage.max_media_size and the disk keeper is busy; storing anyway")

    @staticmethod
    def _release(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        waiters.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a wake-up during it means one more round
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the disk keeper's round failed; trying again later")
            if self._stuck:
                await asyncio.sleep(STUCK_PAUSE)  # writes keep waking us, and nothing may go: do not spin
            try:
                async with asyncio.timeout(INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def round(self) -> None:
        """One pass over the rules; logs what it removed."""
        async with self._round_lock:
            waiting, self._waiters = self._waiters, []
            try:
                if not self._usage.measured:
                    await self._measure()
                await self._enforce_quota()
                self._release(waiting)  # the writers that waited may go on
                removed = await self._expire_events() + await self._expire_audit()
                await self._keep_free_space()
                if removed:
                    await self._return_free_pages()
                self._report_quota()
            finally:
                self._release(waiting)

    async def _between_batches(self) -> None:
        """Long removals (retention, the audit) let waiting writers through: the quota first."""
        if self._waiters or self._usage.over_quota():
            waiting, self._waiters = self._waiters, []
            try:
                await self._enforce_quota()
            finally:
                self._release(waiting)

    async def _measure(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._usage.measure, self._media.root)
        except OSError:
            log.exception("could not measure the media directory; the quota is not checked until it can be")

    async def _free(self) -> int:
        return (await asyncio.get_running_loop().run_in_executor(self._io, shutil.disk_usage, self._media.root)).free

    async def _drop(self, event_ids: list[int], delete_events: bool = False) -> int:
        paths, _ = await self._db.write(drop_media, event_ids, delete_events)
        loop = asyncio.get_running_loop()
        freed = 0
        for path in paths:
            freed += await loop.run_in_executor(self._io, self._media.delete_sync, path)
        self.freed_bytes += freed
        return freed

    async def _enforce_quota(self) -> None:
        if not self._usage.over_quota():
            self._set_stuck(False)
            return
        target = int(self._quota * LOW_WATER)
        if self._free_to is not None:
            await self._free_to(target)
            self._set_stuck(self._usage.over_quota())
            return
        while (excess := self._usage.bytes - target) > 0:
            candidates = await self._db.read(oldest_media_sizes, BATCH)
            if not candidates:
                break
            ids, estimate = [], 0
            for event_id, size in candidates:  # just enough of the oldest (thumbnails come on top)
                ids.append(event_id)
                estimate += size
                if estimate >= excess:
                    break
            await self._drop(ids)
            self._quota_removed += len(ids)
        self._set_stuck(self._usage.over_quota())

    def _report_quota(self) -> None:
        # A round runs at least every INTERVAL, so what is summed up here is told within that time.
        if self._quota_removed and time.monotonic() - self._quota_logged >= QUOTA_LOG_EVERY:
            log.info("media quota: removed the media of the %d oldest closed event(s) since the last report; "
                     "media now %.1f MB of %.1f MB", self._quota_removed, self._usage.bytes / 1e6,
                     self._quota / 1e6)
            self._quota_removed, self._quota_logged = 0, time.monotonic()

    def _set_stuck(self, stuck: bool) -> None:
        if stuck and not self._stuck:
            log.error("media use (%.1f MB) is over %s, but everything left belongs to open "
                      "events or alarms, or waits for MQTT delivery", self._usage.bytes / 1e6, self._quota_key)
        elif self._stuck and not stuck:
            log.info("media use is within %s again", self._quota_key)
        self._stuck = stuck

    async def _expire_events(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self._storage.retention)
        deleted = stripped = 0
        while ids := await self._db.read(expired_dismissed, cutoff, BATCH):
            await self._drop(ids, delete_events=True)
            deleted += len(ids)
            await self._between_batches()
        while ids := await self._db.read(oldest_with_media, BATCH, cutoff):
            await self._drop(ids)
            stripped += len(ids)
            await self._between_batches()
        if deleted or stripped:
            log.info("retention: removed %d dismissed event(s) and the media of %d other closed event(s), "
                     "received before %s (storage.retention %s)", deleted, stripped, _when(cutoff),
                     format_duration(self._storage.retention))
        return deleted + stripped

    async def _expire_audit(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self._storage.audit_retention)
        expired = orphans = 0
        while removed := await self._db.write(expire_audit, cutoff, AUDIT_BATCH):
            expired += removed
            await self._between_batches()
        if not self._orphans_checked:  # once per start: what versions before this one left behind
            while removed := await self._db.write(orphaned_event_audit, AUDIT_BATCH):
                orphans += removed
                await self._between_batches()
            self._orphans_checked = True
        if expired:
            log.info("audit: removed %d entr(ies) from before %s (storage.audit_retention %s)", expired,
                     _when(cutoff), format_duration(self._storage.audit_retention))
        if orphans:
            log.info("audit: removed %d entr(ies) about events that no longer exist", orphans)
        return expired + orphans

    async def _return_free_pages(self) -> None:
        if self._db.postgresql:
            return  # PostgreSQL's autovacuum looks after its own free space
        pages: dict[str, Any] = await self._db.read(page_counts)
        if pages["free"] < max(MIN_FREE_PAGES, pages["pages"] * FREE_SHARE):
            return  # SQLite reuses them for what comes next
        returned = 0
        while step := await self._db.write(return_free_pages, PAGES_PER_STEP):
            returned += step
            await self._between_batches()
        if returned:
            log.info("database: gave %d free page(s) (%.1f MB) back to the file system", returned,
                     returned * pages["page_size"] / 1e6)

    async def _keep_free_space(self) -> None:
        floor = self._storage.min_free_space
        if not floor:
            self.low = False
            return
        removed = 0
        while await self._free() < floor * HEADROOM:
            ids = await self._db.read(oldest_with_media, BATCH)
            if not ids:
                break
            await self._drop(ids)
            removed += len(ids)
        if removed:
            log.warning("low disk: removed the media of the %d oldest closed event(s)", removed)
        self.low = await self._free() < floor
        if self.low:
            log.error("free disk space is below storage.min_free_space and nothing more may be removed: "
                      "SMTP answers 452 (cameras retry) until space is freed")
