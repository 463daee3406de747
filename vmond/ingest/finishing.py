"""Pictures checked quickly during a burst get their full decode and thumbnail once the spool has drained.

While mails queue up in the spool, the pipeline commits and announces each event after the quick check of its
pictures (:func:`vmond.media.images.check_image`: header and end of file), so that a whole site alarming at once
reaches the wall within a second. This finishes those pictures afterwards, a few events at a time whenever the
spool is empty: the full decode in the parser worker (which reads the file itself), the thumbnail written durably,
then one transaction per round that records the thumbnails (or refusals) and announces the events again.

Nothing of it lives only in memory: a picture without its thumbnail is one with ``thumb_path`` NULL, so after a
restart :meth:`PictureFinisher.recover` finds what a crash left unfinished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

from vmond.ingest.records import thumbnail_relpath
from vmond.media.images import ImageRejected, inspect_file
from vmond.store.thumbnails import Finished, Unfinished, finish_pictures, unfinished_pictures
from vmond.util.workers import WorkerFailed, WorkerPool

if TYPE_CHECKING:
    from vmond.media.store import MediaStore
    from vmond.store.changes import Changes
    from vmond.store.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS_PER_ROUND = 8  # then the spool is looked at again: new mails go first
INSPECT_TIMEOUT = 30.0  # seconds of worker time for one picture
RECOVER_LIMIT = 10_000  # pictures looked for after a start (more is more than any crash leaves)


class PictureFinisher:
    def __init__(self, domain: str, media: MediaStore, db: Database, changes: Changes, workers: WorkerPool,
                 io_executor: Executor) -> None:
        self._domain = domain
        self._media = media
        self._db = db
        self._changes = changes
        self._workers = workers
        self._io = io_executor
        self._events: dict[int, None] = {}  # events with unfinished pictures, oldest first
        self._everything = False  # after a start: look for any unfinished picture
        self._running = False

    def note(self, event_id: int) -> None:
        """*event_id* has pictures that had the quick check only."""
        self._events[event_id] = None

    def recover(self) -> None:
        """Look for pictures a crash left unfinished on the next round."""
        self._everything = True

    @property
    def pending(self) -> bool:
        """Pictures wait to be finished, or a round is under way."""
        return self._everything or bool(self._events) or self._running

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def run_round(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Finish the pictures of a few events (the oldest waiting), or fewer when *stop* says so between two
        pictures (a mail came in: it goes first). An error propagates; the round's events are then off the list,
        and a picture that failed that way waits for the next start."""
        self._running = True
        try:
            await self._round(stop)
        finally:
            self._running = False

    async def _round(self, stop: Callable[[], bool]) -> None:
        if self._everything:
            found = await self._db.read(unfinished_pictures, None, RECOVER_LIMIT)
            self._everything = False
            for item in found:
                self._events[item.event_id] = None
        events = list(self._events)[:EVENTS_PER_ROUND]
        for event_id in events:
            del self._events[event_id]
        pictures = await self._db.read(unfinished_pictures, events) if events else []
        done: list[Finished] = []
        for index, picture in enumerate(pictures):
            if index and stop():
                # The rest waits for the next round, first in line.
                self._events = dict.fromkeys([p.event_id for p in pictures[index:]]) | self._events
                break
            finished = await self._finish(picture)
            if finished is not None:
                done.append(finished)
        if done:
            orphans = await self._changes.record(finish_pictures, self._domain, done)
            for path in orphans:
                await self._in_thread(self._media.delete_sync, path)

    async def _finish(self, picture: Unfinished) -> Finished | None:
        try:
            info = await self._workers.run(inspect_file, str(self._media.resolve(picture.path)),
                                           timeout=INSPECT_TIMEOUT)
        except (ImageRejected, WorkerFailed) as exc:  # a picture that kills the decoder is refused as well
            log.warning("event %d: picture %d refused after the quick check: %s", picture.event_id,
                        picture.media_id, exc)
            return Finished(picture.media_id, None, str(exc)[:300])
        except FileNotFoundError:  # removed meanwhile (retention): nothing to finish
            return None
        assert info.thumbnail is not None
        thumb = thumbnail_relpath(picture.path)
        await self._in_thread(self._media.write_sync, thumb, info.thumbnail)
        return Finished(picture.media_id, thumb)
