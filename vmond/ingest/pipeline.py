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
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

from vmond.ingest.finishing import PictureFinisher
from vmond.ingest.prepare import PreparedMail, prepare_spooled
from vmond.ingest.records import build_records, content_digest, local_parts, resend_record
from vmond.ingest.spool import Spool, SpoolEntry
from vmond.store.events import IngestResult, find_resend, record_mail, record_resend
from vmond.util.crashpoints import crashpoint
from vmond.util.tasks import BackgroundService
from vmond.util.workers import WorkerFailed, WorkerPool

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
        self._finisher.recover()
        while True:
            self._wake.clear()
            names = await self._in_thread(self._spool.pending)
            self.busy = bool(names)
            await self._drain(names)
            self.busy = False
            if names:
                continue
            if self._finisher.pending:  # a round, then the spool again: new mails go first
                try:
                    await self._finisher.run_round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("finishing pictures after a burst failed; they keep their full-size view")
                continue
            await self._wake.wait()

    async def _drain(self, names: list[str]) -> None:
        """Process ``names`` in order, each one's parse started while its predecessor is stored."""
        ahead: asyncio.Task[tuple[SpoolEntry, PreparedMail]] | None = None
        try:
            for index, name in enumerate(names):
                # Mails waiting behind this one: the quick picture check, and the wall first.
                current = ahead or asyncio.ensure_future(self._load_and_parse(name, self._quick(names, index)))
                ahead = None
                if index + 1 < len(names):
                    ahead = asyncio.ensure_future(self._load_and_parse(names[index + 1], self._quick(names, index + 1),
                                                                       after=current))
                await self._process_with_retries(name, current)
        finally:
            if ahead is not None and not ahead.cancel() and not ahead.cancelled():
                ahead.exception()  # done already: its failure needs no "never retrieved" warning

    def _quick(self, names: list[str], index: int) -> bool:
        return self._quick_checks and index + 1 < len(names)

    async def _load_and_parse(self, name: str, quick: bool, after: asyncio.Future[Any] | None = None,
                              ) -> tuple[SpoolEntry, PreparedMail]:
        if after is not None:
            await asyncio.wait([after])  # the worker parses in arrival order
        entry = await self._in_thread(self._spool.load, name)
        return entry, await self._parse(name, quick)

    async def _parse(self, name: str, quick: bool = False) -> PreparedMail:
        try:
            return await self._workers.run(prepare_spooled, str(self._spool.path(name)), quick,
                                           timeout=PARSE_TIMEOUT)
        except WorkerFailed as exc:
            # The mail itself is the likeliest cause: keep it raw rather than retry it into the same wall.
            return PreparedMail(parsed=None, error=f"parser {exc}")

    async def _process_with_retries(self, name: str,
                                    parsed: asyncio.Future[tuple[SpoolEntry, PreparedMail]] | None = None) -> None:
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            try:
                await self.process(name, parsed)
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
                parsed = None  # a retry reads and parses the file afresh
                log.exception("processing spooled mail %s failed (attempt %d of %d)", name, attempt, MAX_ATTEMPTS)
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        self.failed += 1
        target = await self._in_thread(self._spool.set_aside, name)
        log.error("spooled mail %s could not be processed; kept as %s for inspection", name, target)

    async def process(self, name: str,
                      parsed: asyncio.Future[tuple[SpoolEntry, PreparedMail]] | None = None) -> None:
        """Turn one spool file into events (one per recipient camera), then delete it.

        ``parsed``, when given, delivers the file's content and parse (started ahead of time); when it fails, the
        file is read and parsed here again, so its error surfaces in this mail's own attempt.
        """
        entry: SpoolEntry | None = None
        prepared: PreparedMail | None = None
        if parsed is not None:
            try:
                entry, prepared = await parsed
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - read and parse again below, where a failure counts as an attempt
                log.debug("parsing spooled mail %s ahead of time failed; trying again", name, exc_info=True)
        if entry is None:
            entry = await self._in_thread(self._spool.load, name)
        domain = self._config.smtp.domain
        digest = await self._in_thread(content_digest, entry.content)
        resends = {}
        for local in local_parts(entry, domain):
            original = await self._db.read(find_resend, local, digest, entry.envelope.received)
            if original is not None:
                resends[local] = original
        for local, event_id in resends.items():
            record = resend_record(entry, local, domain, digest)
            self._announce(await self._changes.record(record_resend, domain, record.ingest_key, event_id, record))
        if len(resends) < len(local_parts(entry, domain)):
            if prepared is None:
                prepared = await self._parse(name)
            if self._make_room is not None:
                await self._make_room()  # so that the quota is exceeded by this mail's media at most
            records = await self._in_thread(build_records, entry, prepared, self._media, domain, set(resends),
                                            digest)
        else:
            records = []
        for record in records:
            result = await self._changes.record(record_mail, self._config.smtp.domain, record,
                                                self._config.events.coalesce_window,
                                                priorities=self._config.events.priorities,
                                                timezone=self._config.site.timezone,
                                                after_commit=lambda: crashpoint("after_db_commit"))
            for path in result.unused_media:
                await self._in_thread(self._media.delete_sync, path)
            if any(item.kind == "image" and item.thumb_path is None for item in record.media):
                self._finisher.note(result.event["id"])
            self._announce(result)
        await self._in_thread(self._spool.remove, name)
        self.processed += 1

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
        if self._clips is not None and (len(event["images"]) >= 2 or any(
                a["content_type"] == "video/mp4" for a in event["attachments"])):
            self._clips.request(event["id"])
        if self._on_ingested is not None:
            self._on_ingested(result)
