"""The pipeline: spool file -> parsed mail -> media on disk -> one database transaction -> live update.

One task drains ``spool/new`` in arrival order, and at start-up replays whatever a crash left there. A spool
file is deleted only after the commit that holds its event; a replay of a file that was already committed finds
its ingest key and creates nothing twice. Parsing and picture checks run in a worker process, file writes on
I/O threads: never on the loop. While one mail is stored and committed, the next one is already parsed: the
parse has no side effects, so this changes nothing about what a crash leaves behind.

A mail with others waiting behind it in the spool gets only the quick picture check (header and end of each file)
before its commit; its pictures are decoded and thumbnailed when the spool has drained
(:mod:`vmond.ingest.finishing`). A mail alone gets the full check at once and is announced with its thumbnails.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from vmond.ingest.finishing import PictureFinisher
from vmond.ingest.prepare import PreparedMail, prepare_spooled
from vmond.ingest.records import build_records, content_digest, discard_staged, local_parts, resend_record
from vmond.ingest.spool import Spool, SpoolEntry
from vmond.store.events import IngestRecord, IngestResult, find_resend
from vmond.store.ingestbatch import MailRecords, record_mails
from vmond.util.crashpoints import crashpoint
from vmond.util.tasks import BackgroundService
from vmond.util.workers import WorkerFailed, WorkerLost, WorkerPool

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.media.clips import ClipMaker
    from vmond.media.store import MediaStore
    from vmond.store.changes import Changes
    from vmond.store.db import Database
    from vmond.util.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5  # then the file is set aside in spool/failed for a human, never deleted
LOST_PARSES = 3  # times a mail is parsed again after the worker died under another mail
WINDOW = 6  # mails read, parsed and stored ahead of their commit (each holds about twice its size in memory)
BATCH = 16  # mails committed in one transaction at most
DISK_FULL_RETRY = 2.0  # seconds between tries while the disk is full


def _disk_full(exc: BaseException | None) -> bool:
    # Walk the chain: when SQLite rolls back by itself on SQLITE_FULL, peewee's own ROLLBACK fails on top of it.
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(exc):  # SQLite's SQLITE_FULL
            return True
        exc = exc.__cause__ or exc.__context__
    return False
PARSE_TIMEOUT = 60.0  # seconds of worker time for one mail; no honest camera mail comes close


class _Ready(NamedTuple):
    """A spooled mail read, parsed and with its media durable on disk: ready for its commit."""

    name: str
    mails: list[MailRecords]  # one per recipient camera


class _Order:
    """The steps of a staged mail that the next one waits for: its resend check, then its parse handed to the
    worker (which takes the next mail's as soon as it is done with this one)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.checked: asyncio.Future[None] = loop.create_future()
        self.handed: asyncio.Future[None] = loop.create_future()

    def submitted(self) -> None:
        if not self.handed.done():
            self.handed.set_result(None)

    def done(self) -> None:
        self.submitted()
        if not self.checked.done():
            self.checked.set_result(None)


class _Flight:
    """What the mails staged ahead of their commit carry: a later one with the same content for the same camera
    is the camera's resend (the transaction, which sees the earlier one by then, confirms it)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def carries(self, local: str, digest: str) -> bool:
        return (local, digest) in self._seen

    def add(self, locals_: list[str], digest: str) -> None:
        self._seen.update((local, digest) for local in locals_)


class Pipeline(BackgroundService):
    """An async context that runs the draining task; :meth:`notify` wakes it after each spooled mail."""

    task_name = "pipeline"

    def __init__(self, config: Config, spool: Spool, media: MediaStore, db: Database, changes: Changes,
                 io_executor: Executor, workers: WorkerPool, metrics: Metrics, clips: ClipMaker | None = None,
                 on_ingested: Callable[[IngestResult], None] | None = None,
                 on_disk_full: Callable[[], None] | None = None,
                 make_room: Callable[[], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._make_room = make_room  # the disk keeper: waits while media are over the quota
        self._on_disk_full = on_disk_full
        self._clips = clips
        self.metrics = metrics
        self._workers = workers
        self._spool = spool
        self._media = media
        self._db = db
        self._changes = changes
        self._io = io_executor
        self._on_ingested = on_ingested
        self._wake = asyncio.Event()
        self._finisher = PictureFinisher(config.smtp.domain, media, db, changes, workers, io_executor)
        self._finisher.recover()  # what a crash left unfinished: looked for once the spool has drained
        # A station that wants the thumbnail inside the event message gets it there: no quick check then.
        self._quick_checks = not (config.mqtt.enabled and config.mqtt.embed_thumbnail)
        self.processed = 0
        self.failed = 0
        self.busy = False  # spooled mails are waiting to become events

    @property
    def pictures_pending(self) -> bool:
        """Pictures of a burst still wait for their full check and thumbnail."""
        return self._finisher.pending

    def notify(self, name: str = "") -> None:
        self._wake.set()


    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _run(self) -> None:
        backlog = await self._in_thread(self._spool.count_pending)
        if backlog:
            log.info("replaying %d spooled mail(s) left from before", backlog)
        while True:
            self._wake.clear()
            names = await self._in_thread(self._spool.pending)
            self.busy = bool(names)
            await self._drain(names)
            self.busy = False
            if names:
                continue
            # Pictures a worker staged and nobody installed (it died, or the mail failed before its media were
            # written): nothing stages any more now, so whatever is there is left over.
            await self._in_thread(self._media.clear_staging)
            if self._finisher.pending:  # a round, then the spool again: new mails go first
                try:
                    await self._finisher.run_round(stop=self._wake.is_set)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("finishing pictures after a burst failed; they keep their full-size view")
                continue
            await self._wake.wait()

    async def _drain(self, names: list[str]) -> None:
        """Process ``names`` in order: up to :data:`WINDOW` mails are read, parsed and stored ahead, and the ones
        ready are committed together (up to :data:`BATCH` in one transaction)."""
        flight = _Flight()
        ahead: deque[tuple[str, asyncio.Task[_Ready]]] = deque()
        before: _Order | None = None
        following = iter(enumerate(names))
        try:
            while True:
                for index, name in following:
                    order = _Order()
                    # Mails waiting behind this one: the quick picture check, and the wall first.
                    task = asyncio.ensure_future(self._stage(name, self._quick(names, index), flight, before, order))
                    ahead.append((name, task))
                    before = order
                    if len(ahead) >= WINDOW:
                        break
                if not ahead:
                    return
                await asyncio.wait([ahead[0][1]])
                batch: list[_Ready] = []
                while ahead and ahead[0][1].done() and not ahead[0][1].exception() and len(batch) < BATCH:
                    batch.append(ahead.popleft()[1].result())
                if not batch:  # the first one failed: it gets its own attempts, alone
                    name, failed = ahead.popleft()
                    log.debug("staging spooled mail %s failed; trying it alone", name, exc_info=failed.exception())
                    await self._process_with_retries(name)
                elif not await self._commit_batch(batch):
                    for ready in batch:
                        await self._process_with_retries(ready.name)
        finally:
            for _, task in ahead:
                if not task.cancel() and not task.cancelled():
                    task.exception()  # done already: its failure needs no "never retrieved" warning

    def _quick(self, names: list[str], index: int) -> bool:
        return self._quick_checks and index + 1 < len(names)

    async def _stage(self, name: str, quick: bool, flight: _Flight | None = None,
                     before: _Order | None = None, order: _Order | None = None) -> _Ready:
        """Read, parse and store one spooled mail, up to its commit: its media are durable when this returns.

        Mails are read at once, checked for resends in arrival order, and handed to the parser one after the
        other (*before* holds the previous mail's steps, *order* this one's): a worker that dies costs the mail it
        was parsing, the one waiting behind it is parsed again. Their media are written concurrently."""
        order = order or _Order()
        try:
            entry, digest = await self._in_thread(self._load, name)
            domain = self._config.smtp.domain
            locals_ = local_parts(entry, domain)
            if before is not None:
                await asyncio.wait([before.checked])
            resends = set()
            for local in locals_:
                if (flight is not None and flight.carries(local, digest)) or await self._db.read(
                        find_resend, local, digest, entry.envelope.received) is not None:
                    resends.add(local)  # checked again in the transaction, which sees every mail before it
            if flight is not None:
                flight.add(locals_, digest)
            order.checked.set_result(None)
            if before is not None:
                await asyncio.wait([before.handed])
            prepared = await self._parse(name, quick, order) if len(resends) < len(locals_) else None
        finally:
            order.done()
        records: dict[str, IngestRecord] = {}
        if prepared is not None:
            if self._make_room is not None:
                try:
                    await self._make_room()  # so that the quota is exceeded by the media in flight at most
                except BaseException:
                    await asyncio.shield(self._in_thread(discard_staged, prepared))
                    raise
            built = await self._in_thread(build_records, entry, prepared, self._media, domain, resends, digest)
            records = {record.local_part: record for record in built}
        return _Ready(name, [MailRecords(local, digest, resend_record(entry, local, domain, digest),
                                         records.get(local)) for local in locals_])

    def _load(self, name: str) -> tuple[SpoolEntry, str]:
        entry = self._spool.load(name)
        return entry, content_digest(entry.content)

    async def _parse(self, name: str, quick: bool = False, order: _Order | None = None) -> PreparedMail:
        for _ in range(LOST_PARSES):
            try:
                return await self._workers.run(prepare_spooled, str(self._spool.path(name)), quick,
                                               str(self._media.staging), timeout=PARSE_TIMEOUT,
                                               on_submitted=None if order is None else order.submitted)
            except WorkerLost:
                continue  # the worker died under the mail before this one: not this mail's fault
            except WorkerFailed as exc:
                # The mail itself is the likeliest cause: keep it raw rather than retry it into the same wall.
                return PreparedMail(parsed=None, error=f"parser {exc}")
        return PreparedMail(parsed=None, error=f"parser died {LOST_PARSES} times under other mails")

    async def _process_with_retries(self, name: str) -> None:
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            try:
                await self.process(name)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _disk_full(exc):
                    # Not the mail's fault, and it is safe in the spool: wait for room as long as it takes.
                    log.error("no room to store spooled mail %s; waiting for disk space (the disk keeper frees "
                              "the oldest closed events' media)", name)
                    if self._on_disk_full is not None:
                        self._on_disk_full()
                    await asyncio.sleep(DISK_FULL_RETRY)
                    continue
                attempt += 1
                log.exception("processing spooled mail %s failed (attempt %d of %d)", name, attempt, MAX_ATTEMPTS)
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        self.failed += 1
        target = await self._in_thread(self._spool.set_aside, name)
        log.error("spooled mail %s could not be processed; kept as %s for inspection", name, target)

    async def process(self, name: str) -> None:
        """Turn one spool file into events (one per recipient camera), then delete it; errors propagate."""
        ready = await self._stage(name, quick=False)
        await self._commit([ready])

    async def _commit_batch(self, batch: list[_Ready]) -> bool:
        """Commit mails staged together; False when that failed (each then gets its own attempts)."""
        if len(batch) == 1:
            return await self._try(self._commit(batch), batch[0].name)
        return await self._try(self._commit(batch), f"{len(batch)} spooled mails")

    async def _try(self, commit: Awaitable[None], what: str) -> bool:
        try:
            await commit
            return True
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - each mail is tried alone next, where failures count and are logged
            log.debug("committing %s failed; trying each mail alone", what, exc_info=True)
            return False

    async def _commit(self, batch: list[_Ready]) -> None:
        done = await self._changes.record(record_mails, self._config.smtp.domain, [r.mails for r in batch],
                                          self._config.events.coalesce_window,
                                          priorities=self._config.events.priorities,
                                          timezone=self._config.site.timezone,
                                          after_commit=lambda: crashpoint("after_db_commit"))
        for recorded in done:
            for item in recorded:
                for path in item.unused_media:
                    await self._in_thread(self._media.delete_sync, path)
                if item.record is not None and any(m.kind == "image" and m.thumb_path is None
                                                   for m in item.record.media):
                    self._finisher.note(item.result.event["id"])
                self._announce(item.result)
        await self._in_thread(self._remove, [ready.name for ready in batch])
        self.processed += len(batch)

    def _remove(self, names: list[str]) -> None:
        for name in names:
            self._spool.remove(name)

    def _announce(self, result: IngestResult) -> None:
        """Log and count what the mail became, and have its clip made (the seam has published it already)."""
        if result.replayed:
            log.info("spooled mail was already recorded as event %d (replay after a restart)", result.event["id"])
            return
        if "retried" in result.event["flags"] and not result.created:
            log.info("a camera sent the mail of event %d again (it missed our 250): noted, not a new alarm",
                     result.event["id"])
        camera = result.event["camera"] or {"id": None, "smtp_address": "?"}
        log.info("event %d %s for camera %s (%s): %s, %d picture(s)", result.event["id"],
                 "created" if result.created else "extended", camera["id"], camera["smtp_address"],
                 result.event["event_type"], len(result.event["images"]))
        if result.created:
            self.metrics.events_created += 1
        else:
            self.metrics.events_updated += 1
        event = result.event
        # Stills become a clip only with video on; a camera's own MP4 is the event's clip either way.
        if self._clips is not None and ((self._config.video.enabled and len(event["images"]) >= 2) or any(
                a["content_type"] == "video/mp4" for a in event["attachments"])):
            self._clips.request(event["id"])
        if self._on_ingested is not None:
            self._on_ingested(result)
