"""From a spooled mail and what the worker made of it to database records, with the media written to disk.

Blocking (file writes with fsync, their folder fsynced once for the mail): runs on an I/O thread. File names are
vmond's own and deterministic for a spool entry and recipient, so a replay after a crash rewrites the same files
instead of adding copies; the name an attachment had in the mail is kept only as metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Set
from datetime import UTC, datetime
from pathlib import PurePosixPath

from vmond.ingest.mailparse import Attachment, ParsedMail
from vmond.ingest.prepare import CheckedImage, PreparedMail
from vmond.ingest.spool import SUFFIX, SpoolEntry
from vmond.media.store import MediaStore
from vmond.store.events import IngestRecord, MediaRecord

log = logging.getLogger(__name__)

BODY_EXCERPT = 4000
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "video/mp4": ".mp4"}


def event_time(parsed: ParsedMail | None, received: datetime) -> datetime:
    """The camera's own time of the event when the mail tells it, else the time of receipt."""
    when = parsed.event_time if parsed is not None else None
    if when is None:
        return received
    if when.tzinfo is None:
        when = when.astimezone()  # cameras send their local wall-clock time; the appliance shares their zone
    return when


def local_parts(entry: SpoolEntry, domain: str) -> list[str]:
    """The recipient cameras' local parts (each once), in the order the camera named them."""
    seen: list[str] = []
    for address in entry.envelope.rcpt_tos:
        local, _, dom = address.strip("<>").rpartition("@")
        if dom.lower() == domain and local.lower() not in seen:
            seen.append(local.lower())
    return seen


def _flags(prepared: PreparedMail) -> tuple[str, ...]:
    flags = []
    if prepared.parsed is None:
        flags.append("unparsed")
    if prepared.rejected:
        flags.append("image_rejected")
    if prepared.others:
        flags.append("attachment_kept")
    return tuple(flags)


def _store_image(media: MediaStore, base: str, image: CheckedImage) -> MediaRecord:
    info = image.info
    path = base + _EXTENSIONS[info.content_type]
    if image.staged is not None:  # the parser worker wrote it: linked into place
        media.install_staged(image.staged, path)
    else:
        media.write_sync(path, image.attachment.data, sync_directory=False)
    thumb = None  # made after the commit when the picture had the quick check only
    if info.thumbnail is not None:
        thumb = thumbnail_relpath(path)
        media.write_sync(thumb, info.thumbnail, sync_directory=False)
    return MediaRecord(kind="image", path=path, content_type=info.content_type,
                       sha256=image.sha256, bytes=image.size, thumb_path=thumb,
                       width=info.width, height=info.height, original_name=image.attachment.filename)


def thumbnail_relpath(path: str) -> str:
    """Where the thumbnail of the picture stored at *path* goes."""
    return str(PurePosixPath(path).with_suffix(".thumb.jpg"))


def _store_opaque(media: MediaStore, path: str, kind: str, content_type: str, data: bytes,
                  original_name: str | None) -> MediaRecord:
    media.write_sync(path, data, sync_directory=False)
    return MediaRecord(kind=kind, path=path, content_type=content_type, sha256=hashlib.sha256(data).hexdigest(),
                       bytes=len(data), original_name=original_name)


def _store_attachment(media: MediaStore, base: str, attachment: Attachment) -> MediaRecord:
    # Kept as an opaque file (".bin" unless it is a known container): never decoded here, never served inline.
    extension = _EXTENSIONS.get(attachment.content_type, ".bin")
    return _store_opaque(media, base + extension, "attachment", attachment.content_type, attachment.data,
                         attachment.filename)


def content_digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def resend_record(entry: SpoolEntry, local: str, domain: str, digest: str) -> IngestRecord:
    """What a camera's resend of an already recorded mail needs: where it came from, nothing to store."""
    received = entry.envelope.received.astimezone(UTC)
    return IngestRecord(ingest_key=f"{entry.name.removesuffix(SUFFIX)}:{local}", local_part=local,
                        received_at=received, event_time=received, event_type="", peer=entry.envelope.peer,
                        mail_from=entry.envelope.mail_from, recipient=f"{local}@{domain}", size=len(entry.content),
                        sha256=digest)


def discard_staged(prepared: PreparedMail) -> None:
    """Remove the pictures the parser worker staged for *prepared* (installed or not). Blocking."""
    for image in prepared.images:
        if image.staged is not None:
            with contextlib.suppress(OSError):
                os.unlink(image.staged)


def build_records(entry: SpoolEntry, prepared: PreparedMail, media: MediaStore, domain: str,
                  skip: Set[str] = frozenset(), digest: str | None = None) -> list[IngestRecord]:
    """One record per recipient camera (but those in *skip*), its media already durable on disk; the staged
    pictures are gone afterwards, whatever happened."""
    try:
        return _build_records(entry, prepared, media, domain, skip, digest)
    finally:
        discard_staged(prepared)


def _build_records(entry: SpoolEntry, prepared: PreparedMail, media: MediaStore, domain: str,
                   skip: Set[str], digest: str | None) -> list[IngestRecord]:
    parsed = prepared.parsed
    received = entry.envelope.received.astimezone(UTC)
    stem = entry.name.removesuffix(SUFFIX)
    day = received.strftime("%Y/%m/%d")
    for name, why in prepared.rejected:
        log.warning("mail %s: picture %r refused: %s", entry.name, name, why)
    if prepared.error:
        log.warning("mail %s could not be parsed (%s); keeping it raw", entry.name, prepared.error)
    records = []
    for local in local_parts(entry, domain):
        if local in skip:
            continue
        base = str(PurePosixPath(day) / f"{stem}-{local}")
        stored = [_store_image(media, f"{base}-{n}", image) for n, image in enumerate(prepared.images)]
        stored += [_store_attachment(media, f"{base}-a{n}", other) for n, other in enumerate(prepared.others)]
        if parsed is None:
            stored.append(_store_opaque(media, f"{base}.eml", "raw", "message/rfc822", entry.content, None))
        subject = parsed.subject if parsed is not None else ""
        records.append(IngestRecord(
            ingest_key=f"{stem}:{local}",
            local_part=local,
            received_at=received,
            event_time=event_time(parsed, received),
            event_type=(parsed.event_type if parsed is not None else None) or subject or "Camera mail",
            phase=parsed.phase if parsed is not None else None,
            subject=subject,
            body_excerpt=parsed.body_text[:BODY_EXCERPT] if parsed is not None else "",
            channel=parsed.channel if parsed is not None else None,
            camera_name=parsed.camera_name if parsed is not None else None,
            vendor=parsed.vendor if parsed is not None else None,
            is_test=parsed.is_test if parsed is not None else False,
            flags=_flags(prepared),
            peer=entry.envelope.peer,
            mail_from=entry.envelope.mail_from,
            recipient=f"{local}@{domain}",
            message_id=parsed.message_id if parsed is not None else None,
            size=len(entry.content),
            defects=tuple(parsed.defects) if parsed is not None else ("unparsed",),
            media=tuple(stored),
            sha256=digest,
        ))
    # One fsync of the folder for all the files of the mail (written without), before anything is committed.
    media.sync_directories([p for record in records for m in record.media for p in (m.path, m.thumb_path) if p])
    return records
