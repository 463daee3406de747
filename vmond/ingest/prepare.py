"""The CPU-heavy half of ingest, run in a worker process: parse the mail, check and thumbnail its pictures.

Synchronous, with no asyncio and no writes: it reads the spool file itself (sending a megabyte to the worker costs
more than reading it there) and returns plain values, so a pathological mail can only cost a worker (which the
pool replaces), never the event loop. With ``quick`` the pictures get only :func:`check_image` (their thumbnails
and full decode come after the commit), else :func:`inspect_image`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, replace

from vmond.ingest.mailparse import Attachment, ParsedMail, parse_mail
from vmond.ingest.spool import read_message
from vmond.media.images import ImageInfo, ImageRejected, check_image, inspect_image
from vmond.media.store import stage_file


@dataclass(frozen=True)
class CheckedImage:
    attachment: Attachment  # its data empty when the picture was staged
    info: ImageInfo
    sha256: str  # of the picture's bytes, hashed here rather than in the daemon's process
    size: int  # bytes
    staged: str | None = None  # the durable file holding the picture (vmond.media.store.stage_file)


@dataclass(frozen=True)
class PreparedMail:
    parsed: ParsedMail | None
    images: tuple[CheckedImage, ...] = ()
    rejected: tuple[tuple[str | None, str], ...] = ()  # (original name, why) of refused pictures
    others: tuple[Attachment, ...] = ()  # attachments that are not pictures: kept opaque, flagged
    error: str | None = None  # why parsing failed (the mail is then kept raw)


def prepare_spooled(path: str, quick: bool = False, staging: str | None = None) -> PreparedMail:
    """:func:`prepare_mail` of the message in the spool file at *path*; with *staging* (a media store's staging
    folder) its pictures are written there, durably, and only their names come back: a megabyte of pictures
    passed back to the daemon's process costs it more than it costs here to write them (then it only links them
    into place)."""
    prepared = prepare_mail(read_message(path), quick)
    if staging is None or not prepared.images or prepared.parsed is None:
        return prepared
    staged: dict[int, Attachment] = {}  # id of the attachment with data -> the same without
    images = []
    try:
        for image in prepared.images:
            data = image.attachment.data
            light = replace(image.attachment, data=b"")
            images.append(replace(image, attachment=light, staged=stage_file(staging, data)))
            staged[id(image.attachment)] = light
    except OSError:  # the disk full, say: the daemon writes them itself and meets the error there
        for done in images:
            with contextlib.suppress(OSError):
                os.unlink(done.staged or "")
        return prepared
    parsed = replace(prepared.parsed, attachments=tuple(staged.get(id(a), a) for a in prepared.parsed.attachments))
    return replace(prepared, parsed=parsed, images=tuple(images))


def prepare_mail(raw: bytes, quick: bool = False) -> PreparedMail:
    try:
        parsed = parse_mail(raw)
    except Exception as exc:  # noqa: BLE001 - any parser failure makes the mail an "unparsed" event
        return PreparedMail(parsed=None, error=f"{type(exc).__name__}: {exc}"[:300])
    images, rejected, others = [], [], []
    check = check_image if quick else inspect_image
    for attachment in parsed.attachments:
        if attachment.is_image:
            try:
                images.append(CheckedImage(attachment, check(attachment.data),
                                           hashlib.sha256(attachment.data).hexdigest(), len(attachment.data)))
            except ImageRejected as exc:
                rejected.append((attachment.filename, str(exc)[:300]))
        else:
            others.append(attachment)
    return PreparedMail(parsed=parsed, images=tuple(images), rejected=tuple(rejected), others=tuple(others))
