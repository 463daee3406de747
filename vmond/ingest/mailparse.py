"""Parse a raw camera alarm mail into a ``ParsedMail`` (a pure function of bytes).

The input is hostile and cameras write MIME badly, so the *structure* is split
by ``vmond.ingest.mimesplit``, not by ``email.parser`` (which builds the whole
tree before part count or depth could be bounded); the walk below stops at
``MAX_PARTS`` / ``MAX_DEPTH``.  The stdlib still does what it is good at, on
bounded values: parameters and RFC 2231 filenames via a compat32 ``Message``,
addresses via ``email.utils``.  Text, byte and header-value helpers (charsets,
RFC 2047 words, base64 repair, type sniffing, dates, HTML) live in
``vmond.ingest.mimetext``; vendor wording in ``vmond.ingest.vendors``.

Text that leaves the parser (subject, body, vendor fields) carries no control
characters, but markup is kept as text: escaping is the web layer's job.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr

from vmond.ingest.mimesplit import (
    MAX_HEADER_LINES,
    MAX_HEADER_VALUE,
    content_type,
    params,
    split_headers,
    split_multipart,
)
from vmond.ingest.mimetext import (
    MAX_TEXT_PART,
    clean_filename,
    decode_base64,
    decode_text,
    decode_words,
    header_text,
    html_to_text,
    parse_date,
    sniff_type,
    strip_controls,
)
from vmond.ingest.uudecode import UUBlock, decode_uu, split_uu_blocks
from vmond.ingest.vendors import extract_hints, is_test_mail, subject_event_type

# The header bounds are applied in mimesplit but are re-exported: they are part of
# what parse_mail promises, next to its own bounds.
__all__ = [
    "MAX_BODY_TEXT", "MAX_DEPTH", "MAX_HEADER_LINES", "MAX_HEADER_VALUE", "MAX_PARTS",
    "Attachment", "MailParseError", "ParsedMail", "parse_mail",
]

MAX_PARTS = 200  # MIME entities walked, containers included
MAX_DEPTH = 10  # multipart / message nesting
MAX_BODY_TEXT = 64 * 1024  # characters of body_text kept

IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
_IMAGE_LABELS = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png"})


class MailParseError(Exception):
    """The bytes are too broken to extract anything useful from."""


@dataclass(frozen=True)
class Attachment:
    """A decoded non-body part."""

    content_type: str  # sniffed from magic bytes when recognisable, else declared
    declared_type: str  # the MIME header's type, lower-cased
    filename: str | None  # decoded and sanitised; informational only, never a path
    data: bytes

    @property
    def is_image(self) -> bool:
        return self.content_type in IMAGE_TYPES


@dataclass(frozen=True)
class ParsedMail:
    """What vmond keeps of one camera mail."""

    subject: str
    from_address: str | None
    message_id: str | None
    date: datetime | None
    event_time: datetime | None
    event_type: str | None
    channel: str | None
    camera_name: str | None
    vendor: str | None
    body_text: str
    charset: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    is_test: bool
    device_name: str | None = None  # recorder / camera device name from vendor hints
    # "start" / "stop" when the camera mails both ends of one alarm (event_type then
    # lacks the phase word, so both mails share it); None for one-shot alarms.
    phase: str | None = None

    @property
    def images(self) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if a.is_image)


# --- the walk ----------------------------------------------------------------------


@dataclass
class _Walk:
    """Accumulates what a depth-first walk over the MIME entities finds."""

    defects: list[str]
    texts: list[tuple[str, str | None]] = field(default_factory=list)
    htmls: list[tuple[str, str | None]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    text_size: int = 0
    parts: int = 0
    full: bool = False

    def entity(self, headers: dict[str, bytes], body: bytes, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            if not self.full:
                self.defects.append("too_many_parts")
            self.full = True
            return
        ctype = content_type(headers)
        if not (ctype.startswith("multipart/") or ctype == "message/rfc822"):
            self.leaf(headers, body, ctype)
            return
        if depth >= MAX_DEPTH:
            self.defects.append("too_deep")
            return
        if ctype == "message/rfc822":  # e.g. an alarm forwarded by a person
            inner_headers, inner_body = split_headers(self.decode(headers, body), self.defects)
            self.entity(inner_headers, inner_body, depth + 1)
            return
        try:
            boundary = (params(headers).get_boundary() or "").encode("utf-8", "replace")
        except (ValueError, TypeError, LookupError):
            boundary = b""
        parts = split_multipart(body, boundary, self.defects)
        if parts is None:  # no delimiter at all: keep the body as text
            self.defects.append("bad_boundary")
            self.leaf({}, body, "text/plain")
            return
        for part in parts:
            if self.full:
                break
            part_headers, part_body = split_headers(part, self.defects)
            self.entity(part_headers, part_body, depth + 1)

    def decode(self, headers: dict[str, bytes], body: bytes) -> bytes:
        cte = header_text(headers.get("content-transfer-encoding")).strip().strip("\"'").lower()
        try:
            if "base64" in cte:
                data = decode_base64(body)
                if not data and body.strip():
                    self.defects.append("undecodable_part")
                    return body
                return data
            if "quoted" in cte:
                return binascii.a2b_qp(body)
            if "uu" in cte:
                data, bad = decode_uu(body)
                if bad:
                    self.defects.append("bad_uuencode_line")
                return data
        except (binascii.Error, ValueError):
            self.defects.append("undecodable_part")
            return body
        if cte not in ("", "7bit", "8bit", "binary"):
            self.defects.append("unknown_cte")
        return body

    def leaf(self, headers: dict[str, bytes], body: bytes, ctype: str) -> None:
        found = params(headers)
        data = self.decode(headers, body)
        try:
            filename = clean_filename(found.get_filename())
            disposition = found.get_content_disposition()
            charset = found.get_content_charset()
        except (ValueError, TypeError, LookupError, IndexError):
            filename, disposition, charset = None, None, None
            self.defects.append("bad_params")
        is_text = ctype in ("text/plain", "text/html") and disposition != "attachment"
        sniffed = sniff_type(data, text=is_text)
        if is_text and sniffed is None:
            self.text(data, ctype, charset)
            return
        if not data:
            self.defects.append("empty_part")
            return
        kind = sniffed or ctype
        if ctype in _IMAGE_LABELS and sniffed not in IMAGE_TYPES:
            # Labelled JPEG/PNG without its signature (garbage, or a TIFF named
            # snapshot.jpg): not something to thumbnail; the magic, if any, says what it is.
            self.defects.append("image_magic_mismatch")
            kind = sniffed or "application/octet-stream"
        self.attachments.append(Attachment(kind, ctype, filename, data))

    def text(self, data: bytes, ctype: str, charset: str | None) -> None:
        if self.text_size >= MAX_BODY_TEXT:
            self.defects.append("body_truncated")
            return
        raw = data[:MAX_TEXT_PART]
        blocks: list[UUBlock] = []
        if ctype == "text/plain":  # old firmware puts "begin 644 snap.jpg" blocks in the text
            raw, blocks = split_uu_blocks(raw)
        for block in blocks:
            if block.bad_lines:
                self.defects.append("bad_uuencode_line")
            if block.data:
                kind = sniff_type(block.data) or "application/octet-stream"
                self.attachments.append(Attachment(kind, ctype, clean_filename(block.filename), block.data))
        text = decode_text(raw, charset, self.defects).replace("\r\n", "\n").replace("\r", "\n")
        self.text_size += len(text)
        (self.texts if ctype == "text/plain" else self.htmls).append((text, charset))


# --- the message -------------------------------------------------------------------


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse one raw message (the bytes after SMTP DATA) into a ParsedMail.

    Pure: no I/O, no clock.  Oddities become ``defects``; only bytes without a
    single recognisable header field raise ``MailParseError``.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_mail() needs bytes, not {type(raw).__name__}")
    try:
        return _parse(bytes(raw))
    except MailParseError:
        raise
    except Exception as exc:  # an input we did not foresee: the pipeline keeps the raw
        raise MailParseError(f"cannot parse mail: {exc.__class__.__name__}: {exc}") from exc


def _parse(data: bytes) -> ParsedMail:
    defects: list[str] = []
    if b"\r" in data and b"\n" not in data:  # old Mac line ends
        data = data.replace(b"\r", b"\n")
    start = len(data) - len(data.lstrip())
    if start:
        defects.append("leading_blank_lines")
    if data.startswith(b"From ", start):  # an mbox separator line
        start = data.find(b"\n", start) + 1 or len(data)
    headers, body = split_headers(data[start:], defects)
    if not headers:
        raise MailParseError("no header fields found")

    walk = _Walk(defects)
    walk.entity(headers, body, 0)
    texts = walk.texts or [(html_to_text(t), cs) for t, cs in walk.htmls]
    charset = texts[0][1] if texts else None
    body_text = strip_controls("\n\n".join(t.strip() for t, _ in texts if t.strip()), keep="\n\t")
    if len(body_text) > MAX_BODY_TEXT:
        body_text = body_text[:MAX_BODY_TEXT]
        defects.append("body_truncated")

    # Controls go before whitespace is collapsed, so "a \0 b" leaves one space, not two.
    subject = " ".join(strip_controls(decode_words(header_text(headers.get("subject"), charset)), "\t\r\n").split())
    from_header = decode_words(header_text(headers.get("from"), charset))
    from_address = strip_controls(parseaddr(header_text(headers.get("from"))[:2048])[1]) or None
    message_id = " ".join(strip_controls(header_text(headers.get("message-id")), "\t\r\n").split())[:998] or None
    if message_id is None:
        defects.append("no_message_id")
    date = parse_date(header_text(headers.get("date")).strip(), defects)

    attachments = tuple(walk.attachments)
    header_hints = {"from": from_header, "x-mailer": header_text(headers.get("x-mailer")),
                    "x-vmond-test": header_text(headers.get("x-vmond-test"))}
    hints = extract_hints(subject, body_text, header_hints, [a.filename for a in attachments if a.filename])
    return ParsedMail(
        subject=subject,
        from_address=from_address,
        message_id=message_id,
        date=date,
        event_time=hints.event_time or date,
        event_type=hints.event_type or subject_event_type(subject, hints),
        channel=hints.channel,
        camera_name=hints.camera_name,
        vendor=hints.vendor,
        body_text=body_text,
        charset=charset,
        attachments=attachments,
        defects=tuple(dict.fromkeys(defects)),
        is_test=is_test_mail(subject, body_text, len(attachments), hints, header_hints),
        device_name=hints.device_name,
        phase=hints.phase,
    )
