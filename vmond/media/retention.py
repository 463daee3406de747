"""The disk keeper: a background task that enforces ``storage.retention``, ``storage.max_media_size`` and
``storage.min_free_space`` by removing the media of the oldest closed events first (see
:mod:`vmond.store.retention` for what may go). Below ``min_free_space`` the SMTP door also answers 452 4.3.1 on
its own, so cameras retry later instead of losing alarms.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from concurrent.futures import Executor
from datetime import timedelta
from typing import TYPE_CHECKING

from vmond.store.models import utcnow
from vmond.store.retention import drop_media, expired_dismissed, media_bytes, oldest_with_media
from vmond.tasks import BackgroundService

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.media.store import MediaStore
    from vmond.store.db import Database

log = logging.getLogger(__name__)

INTERVAL = 300.0  # seconds between rounds; a round also runs when the disk gets low
BATCH = 20  # events per database transaction
HEADROOM = 1.1  # free this much more than min_free_space, so that one mail does not start the next round


class DiskKeeper(BackgroundService):
    task_name = "disk keeper"

    def __init__(self, config: Config, db: Database, media: MediaStore, io: Executor) -> None:
        self._storage = config.storage
        self._db = db
        self._media = media
        self._io = io
        self._wake = asyncio.Event()
        self.freed_bytes = 0
        self.low = False


    def nudge(self) -> None:
        """Run a round now (the SMTP door calls this when it had to answer 452)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the disk keeper's round failed; trying again later")
            self._wake.clear()
            try:
                async with asyncio.timeout(INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _free(self) -> int:
        return (await asyncio.get_running_loop().run_in_executor(self._io, shutil.disk_usage, self._media.root)).free

    async def _drop(self, event_ids: list[int], delete_events: bool = False) -> int:
        paths, freed = await self._db.write(drop_media, event_ids, delete_events)
        loop = asyncio.get_running_loop()
        for path in paths:
            await loop.run_in_executor(self._io, self._media.delete_sync, path)
        self.freed_bytes += freed
        return freed

    async def round(self) -> None:
        """One pass over the three rules; logs what it removed."""
        cutoff = utcnow() - timedelta(seconds=self._storage.retention)
        expired = 0
        while ids := await self._db.read(expired_dismissed, cutoff, BATCH):
            await self._drop(ids, delete_events=True)
            expired += len(ids)
        while ids := await self._db.read(oldest_with_media, BATCH, cutoff):
            await self._drop(ids)
            expired += len(ids)
        if expired:
            log.info("retention: removed the media of %d event(s) older than %s", expired, cutoff.date())
        over = 0
        while await self._db.read(media_bytes) > self._storage.max_media_size:
            ids = await self._db.read(oldest_with_media, BATCH)
            if not ids:
                log.error("media use is over storage.max_media_size, but everything left belongs to open events "
                          "or alarms, or waits for MQTT delivery")
                break
            await self._drop(ids)
            over += len(ids)
        if over:
            log.warning("media quota: removed the media of the %d oldest closed event(s)", over)
        await self._keep_free_space()

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
