"""The bound of a central station's media cache (``central.media_cache``): the least recently served go first.

On a central the disk keeper's quota is ``central.media_cache`` (the media directory holds only what was fetched
from the sites), and instead of the oldest events' media it frees room with :func:`evict_least_served`. A cached
file's modification time is when it was last served (:func:`vmond.central.media.touch`) or received, so the order
survives a restart without a column of its own. An evicted file's row goes back to "not fetched": it is asked for
again when someone opens it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Executor
from pathlib import Path

from vmond.media.store import MediaStore
from vmond.store.centralmedia import cached_paths, forget_cached
from vmond.store.db import Database

log = logging.getLogger(__name__)

BATCH = 200  # files per database transaction
ORPHAN_AFTER = 600.0  # seconds: a file this old that no row names was left by a crash


def cached_files(root: Path) -> list[tuple[float, int, str]]:
    """(last used, bytes, path relative to *root*) of the finished files under *root*, least recently used
    first (blocking: a walk of the cache)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue  # a write in progress
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_mtime, stat.st_size, path.relative_to(root).as_posix()))
    found.sort()
    return found


class CacheBound:
    """Frees the central's media cache down to a target, least recently served first."""

    def __init__(self, db: Database, media: MediaStore, io: Executor) -> None:
        self._db, self._media, self._io = db, media, io
        self.evicted = 0

    async def free_to(self, target: int) -> None:
        """Remove the least recently served files until the media directory holds at most *target* bytes."""
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(self._io, cached_files, self._media.root)
        usage = self._media.usage
        total = usage.bytes if usage.measured else sum(size for _, size, _ in files)
        if total <= target:
            return
        named = await self._db.read(cached_paths)
        # Files no row names (left by a crash between write and commit) go before any that is used; a file
        # written just now is not one of them: its row is being committed.
        settled = time.time() - ORPHAN_AFTER
        files.sort(key=lambda item: (item[2] in named or item[0] > settled, item[0]))
        chosen, excess = [], total - target
        for _, size, relpath in files:
            if excess <= 0:
                break
            chosen.append(relpath)
            excess -= size
        for start in range(0, len(chosen), BATCH):
            batch = chosen[start:start + BATCH]
            await self._db.write(forget_cached, batch)  # first the rows: none names a file that is gone
            for relpath in batch:
                await loop.run_in_executor(self._io, self._media.delete_sync, relpath)
        self.evicted += len(chosen)
        log.info("central.media_cache: removed %d least recently used file(s) (%.1f MB over the bound)",
                 len(chosen), (total - target) / 1e6)
