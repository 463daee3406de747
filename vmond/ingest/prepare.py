"""The CPU-heavy half of ingest, run in a worker process: parse the mail, check and thumbnail its pictures.

Pure and synchronous, with no asyncio and no file I/O: it gets the raw bytes and returns plain values, so a
pathological mail can only cost a worker (which the pool replaces), never the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmond.ingest.mailparse import Attachment, ParsedMail, parse_mail
from vmond.media.images import ImageInfo, ImageRejected, inspect_image


@dataclass(frozen=True)
class CheckedImage:
    attachment: Attachment
    info: ImageInfo


@dataclass(frozen=True)
class PreparedMail:
    parsed: ParsedMail | None
    images: tuple[CheckedImage, ...] = ()
    rejected: tuple[tuple[str | None, str], ...] = ()  # (original name, why) of refused pictures
    others: tuple[Attachment, ...] = ()  # attachments that are not pictures: kept opaque, flagged
    error: str | None = None  # why parsing failed (the mail is then kept raw)


def prepare_mail(raw: bytes) -> PreparedMail:
    try:
        parsed = parse_mail(raw)
    except Exception as exc:  # noqa: BLE001 - any parser failure makes the mail an "unparsed" event
        return PreparedMail(parsed=None, error=f"{type(exc).__name__}: {exc}"[:300])
    images, rejected, others = [], [], []
    for attachment in parsed.attachments:
        if attachment.is_image:
            try:
                images.append(CheckedImage(attachment, inspect_image(attachment.data)))
            except ImageRejected as exc:
                rejected.append((attachment.filename, str(exc)[:300]))
        else:
            others.append(attachment)
    return PreparedMail(parsed=parsed, images=tuple(images), rejected=tuple(rejected), others=tuple(others))
