"""The pipeline: spool file -> parsed mail -> media on disk -> one database transaction -> live update.

One task drains ``spool/new`` in arrival order, and at start-up replays whatever a crash left there. A spool
file is deleted only after the commit that holds its event; a replay of a file that was already committed finds
its ingest key and creates nothing twice. Parsing and image work run on worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from vmond.ingest.mailparse import ParsedMail, parse_mail
from vmond.ingest.spool import SUFFIX, Spool, SpoolEntry
from vmond.media.images import ImageRejected, inspect_image
from vmond.store.events import IngestRecord, IngestResult, MediaRecord, record_mail

if TYPE_CHECKING:
    from vmond.bus import Bus
    from vmond.config import Config
    from vmond.media.store import MediaStore
    from vmond.store.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

BODY_EXCERPT = 4000
MAX_ATTEMPTS = 5  # then the file is set aside in spool/failed for a human, never deleted


def _event_time(parsed: ParsedMail | None, received: datetime) -> datetime:
    when = parsed.event_time if parsed is not None else None
    if when is None:
        return received
    if when.tzinfo is None:
        when = when.astimezone()  # cameras send their local wall-clock time; the appliance shares their zone
    return when


def _local_parts(entry: SpoolEntry, domain: str) -> list[str]:
    seen: list[str] = []
    for address in entry.envelope.rcpt_tos:
        local, _, dom = address.strip("<>").rpartition("@")
        if dom.lower() == domain and local.lower() not in seen:
            seen.append(local.lower())
    return seen


class Pipeline:
    """An async context that runs the draining task; :meth:`notify` wakes it after each spooled mail."""

    def __init__(self, config: Config, spool: Spool, media: MediaStore, db: Database, bus: Bus,
                 io_executor: Executor, on_ingested: Callable[[IngestResult], None] | None = None) -> None:
        self._config = config
        self._spool = spool
        self._media = media
        self._db = db
        self._bus = bus
        self._io = io_executor
        self._on_ingested = on_ingested
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.processed = 0
        self.failed = 0

    def notify(self, name: str = "") -> None:
        self._wake.set()

    async def __aenter__(self) -> Pipeline:
        self._task = asyncio.create_task(self._run(), name="pipeline")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _run(self) -> None:
        backlog = await self._in_thread(self._spool.count_pending)
        if backlog:
            log.info("replaying %d spooled mail(s) left from before", backlog)
        while True:
            self._wake.clear()
            names = await self._in_thread(self._spool.pending)
            for name in names:
                await self._process_with_retries(name)
            if not names:
                await self._wake.wait()

    async def _process_with_retries(self, name: str) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self.process(name)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("processing spooled mail %s failed (attempt %d of %d)", name, attempt, MAX_ATTEMPTS)
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        self.failed += 1
        target = await self._in_thread(self._spool.set_aside, name)
        log.error("spooled mail %s could not be processed; kept as %s for inspection", name, target)

    async def process(self, name: str) -> None:
        """Turn one spool file into events (one per recipient camera), then delete it."""
        entry = await self._in_thread(self._spool.load, name)
        records = await self._in_thread(self._prepare, entry)
        for record in records:
            result = await self._db.write(record_mail, self._config.smtp.domain, record,
                                          self._config.events.coalesce_window)
            self._announce(result)
        await self._in_thread(self._spool.remove, name)
        self.processed += 1

    def _announce(self, result: IngestResult) -> None:
        if result.replayed:
            log.info("spooled mail was already recorded as event %d (replay after a restart)", result.event["id"])
            return
        log.info("event %d %s: %s, %d picture(s)", result.event["id"], "created" if result.created else "extended",
                 result.event["event_type"], len(result.event["images"]))
        self._bus.publish("event.created" if result.created else "event.updated", result.event)
        if self._on_ingested is not None:
            self._on_ingested(result)

    def _prepare(self, entry: SpoolEntry) -> list[IngestRecord]:
        """Parse and store media for every recipient (blocking: runs on a worker thread)."""
        received = entry.envelope.received.astimezone(UTC)
        flags: list[str] = []
        try:
            parsed: ParsedMail | None = parse_mail(entry.content)
        except Exception:  # noqa: BLE001 - a broken mail still becomes an event
            log.warning("mail %s could not be parsed; keeping it raw", entry.name, exc_info=True)
            parsed = None
            flags.append("unparsed")
        stem = entry.name.removesuffix(SUFFIX)
        day = received.strftime("%Y/%m/%d")
        images = self._check_images(parsed, entry.name, flags)
        records = []
        for local in _local_parts(entry, self._config.smtp.domain):
            base = str(PurePosixPath(day) / f"{stem}-{local}")
            media = [self._store_image(f"{base}-{n}", data, info) for n, (data, info) in enumerate(images)]
            if parsed is None:
                media.append(self._store_raw(f"{base}.eml", entry.content))
            subject = parsed.subject if parsed is not None else ""
            records.append(IngestRecord(
                ingest_key=f"{stem}:{local}",
                local_part=local,
                received_at=received,
                event_time=_event_time(parsed, received),
                event_type=(parsed.event_type if parsed is not None else None) or subject or "Camera mail",
                subject=subject,
                body_excerpt=parsed.body_text[:BODY_EXCERPT] if parsed is not None else "",
                channel=parsed.channel if parsed is not None else None,
                vendor=parsed.vendor if parsed is not None else None,
                is_test=parsed.is_test if parsed is not None else False,
                flags=tuple(flags),
                peer=entry.envelope.peer,
                mail_from=entry.envelope.mail_from,
                recipient=f"{local}@{self._config.smtp.domain}",
                message_id=parsed.message_id if parsed is not None else None,
                size=len(entry.content),
                defects=tuple(parsed.defects) if parsed is not None else ("unparsed",),
                media=tuple(media),
            ))
        return records

    def _check_images(self, parsed: ParsedMail | None, name: str, flags: list[str]) -> list[tuple[bytes, Any]]:
        checked = []
        for attachment in parsed.images if parsed is not None else ():
            try:
                checked.append((attachment.data, inspect_image(attachment.data)))
            except ImageRejected as exc:
                log.warning("mail %s: image %r refused: %s", name, attachment.filename, exc)
                if "image_rejected" not in flags:
                    flags.append("image_rejected")
        return checked

    def _store_image(self, base: str, data: bytes, info: Any) -> MediaRecord:
        extension = ".png" if info.content_type == "image/png" else ".jpg"
        path, thumb = base + extension, base + ".thumb.jpg"
        self._media.write_sync(path, data)
        self._media.write_sync(thumb, info.thumbnail)
        return MediaRecord(kind="image", path=path, content_type=info.content_type,
                           sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), thumb_path=thumb,
                           width=info.width, height=info.height)

    def _store_raw(self, path: str, content: bytes) -> MediaRecord:
        self._media.write_sync(path, content)
        return MediaRecord(kind="raw", path=path, content_type="message/rfc822",
                           sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))
