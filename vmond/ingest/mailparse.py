"""Parse a raw camera alarm mail into a ``ParsedMail`` (a pure function of bytes).

The input is hostile and cameras write MIME badly, so the *structure* is split
here, not by ``email.parser``: its feed parser builds the whole tree before
part count or depth could be bounded, and it folds a mangled closing delimiter
(``----boundary--``) into the last attachment.  Our splitter is one linear regex
scan per multipart level and stops at ``MAX_PARTS`` / ``MAX_DEPTH``.  The stdlib
still does what it is good at, on bounded values: parameters and RFC 2231
filenames via a compat32 ``Message`` (the ``default`` policy's strict header
parser raises or mangles on camera headers), addresses via ``email.utils``.
Text, byte and header-value helpers (charsets, RFC 2047 words, base64 repair,
type sniffing, dates, HTML) live in ``vmond.ingest.mimetext``.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import parseaddr
from itertools import chain

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
)
from vmond.ingest.uudecode import decode_uu, split_uu_blocks
from vmond.ingest.vendors import extract_hints, is_test_mail

__all__ = ["Attachment", "MailParseError", "ParsedMail", "parse_mail"]

MAX_PARTS = 200  # MIME entities walked, containers included
MAX_DEPTH = 10  # multipart / message nesting
MAX_BODY_TEXT = 64 * 1024  # characters of body_text kept
MAX_HEADER_LINES = 1000  # per header block, continuations included
MAX_HEADER_VALUE = 8 * 1024  # bytes kept of one header value

IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})


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

    @property
    def images(self) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if a.is_image)


# --- structure -------------------------------------------------------------------

_FIELD_NAME = re.compile(rb"([!-9;-~]{1,128})[ \t]*:")


def _split_headers(data: bytes, defects: list[str]) -> tuple[dict[str, bytes], bytes]:
    """Split an entity into (first value of each header, body)."""
    headers: dict[str, bytes] = {}
    name: str | None = None
    parts: list[bytes] = []
    size = pos = lines = 0

    def commit() -> None:
        if name is not None and name not in headers:
            headers[name] = b"".join(parts)[:MAX_HEADER_VALUE]

    body = b""
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end].rstrip(b"\r")
        lines += 1
        if not line.strip():
            body = data[end + 1 :]
            break
        if lines > MAX_HEADER_LINES:
            defects.append("too_many_headers")
            body = data[pos:]
            break
        if line[:1] in (b" ", b"\t") and name is not None:
            if size < MAX_HEADER_VALUE:
                parts.append(line)
                size += len(line)
        else:
            match = _FIELD_NAME.match(line)
            if match is None:  # no blank line before the body
                defects.append("missing_header_separator")
                body = data[pos:]
                break
            commit()
            name = match.group(1).decode("ascii").lower()
            parts, size = [line[match.end() :]], len(line)
        pos = end + 1
    commit()
    return headers, body


def _params(headers: dict[str, bytes]) -> Message:
    msg = Message()  # compat32: stores values verbatim, parses params on demand
    for name in ("content-type", "content-disposition"):
        if name in headers:
            msg[name] = header_text(headers[name])
    return msg


_CTYPE = re.compile(r"\s*([\w!#$&^.+-]+)\s*/\s*([\w!#$&^.+-]+)")


def _content_type(headers: dict[str, bytes]) -> str:
    match = _CTYPE.match(header_text(headers.get("content-type")))
    return f"{match.group(1)}/{match.group(2)}".lower() if match else "text/plain"


def _delimiters(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool, bool]]:
    """Yield (line start, line end, is_close, mangled) for each delimiter line.

    Tolerates extra or missing dashes around the boundary (``----b--``) and
    trailing blanks; the regex engine does the scanning, so this is linear.
    """
    core = boundary.strip(b"-")
    if not core:  # an all-dash boundary: exact matches only
        pattern = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$")
        for m in pattern.finditer(body):
            yield m.start(), m.end(), m.group(1) is not None, False
        return
    lead0 = len(boundary) - len(boundary.lstrip(b"-")) + 2
    trail0 = len(boundary) - len(boundary.rstrip(b"-"))
    pattern = re.compile(rb"(?m)^(--+)" + re.escape(core) + rb"(-*)[ \t]*\r?$")
    for m in pattern.finditer(body):
        lead, trail = len(m.group(1)), len(m.group(2))
        close = trail >= trail0 + 2
        yield m.start(), m.end(), close, lead != lead0 or trail not in (trail0, trail0 + 2)


_GUESS = re.compile(rb"(?m)^--([!-~]{1,200})[ \t]*\r?\n(?=[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-)")


def _split_multipart(body: bytes, boundary: bytes, defects: list[str]) -> Iterator[bytes] | None:
    """Yield part bytes lazily; None when no delimiter for any boundary is found."""
    delims = _delimiters(body, boundary) if boundary else iter(())
    first = next(delims, None)
    if first is None:
        guess = _GUESS.search(body)
        if guess is None:
            return None
        defects.append("bad_boundary")
        delims = _delimiters(body, guess.group(1))
        first = next(delims, None)

    def parts() -> Iterator[bytes]:
        start, closed = None, False
        for line_start, line_end, close, mangled in chain((first,) if first else (), delims):
            if mangled:
                defects.append("bad_boundary")
            if start is not None:
                end = line_start - (2 if body[line_start - 2 : line_start] == b"\r\n" else 1)
                yield body[start : max(start, end)]
            if close:
                closed = True
                break
            start = line_end + 1
        if not closed:
            defects.append("bad_boundary")
            if start is not None and start < len(body):
                yield body[start:]

    return parts()


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
        ctype = _content_type(headers)
        if not (ctype.startswith("multipart/") or ctype == "message/rfc822"):
            self.leaf(headers, body, ctype)
            return
        if depth >= MAX_DEPTH:
            self.defects.append("too_deep")
            return
        if ctype == "message/rfc822":  # e.g. an alarm forwarded by a person
            inner_headers, inner_body = _split_headers(self.decode(headers, body), self.defects)
            self.entity(inner_headers, inner_body, depth + 1)
            return
        try:
            boundary = (_params(headers).get_boundary() or "").encode("utf-8", "replace")
        except (ValueError, TypeError, LookupError):
            boundary = b""
        parts = _split_multipart(body, boundary, self.defects)
        if parts is None:  # no delimiter at all: keep the body as text
            self.defects.append("bad_boundary")
            self.leaf({}, body, "text/plain")
            return
        for part in parts:
            if self.full:
                break
            part_headers, part_body = _split_headers(part, self.defects)
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
        params = _params(headers)
        data = self.decode(headers, body)
        try:
            filename = clean_filename(params.get_filename())
            disposition = params.get_content_disposition()
            charset = params.get_content_charset()
        except (ValueError, TypeError, LookupError, IndexError):
            filename, disposition, charset = None, None, None
            self.defects.append("bad_params")
        sniffed = sniff_type(data)
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and sniffed is None:
            self.text(data, ctype, charset)
            return
        if not data:
            self.defects.append("empty_part")
            return
        content_type = sniffed or ctype
        if sniffed is None and ctype in ("image/jpeg", "image/jpg", "image/pjpeg", "image/png"):
            # Labelled JPEG/PNG without the signature: not something to thumbnail.
            self.defects.append("image_magic_mismatch")
            content_type = "application/octet-stream"
        self.attachments.append(Attachment(content_type, ctype, filename, data))

    def text(self, data: bytes, ctype: str, charset: str | None) -> None:
        if self.text_size >= MAX_BODY_TEXT:
            self.defects.append("body_truncated")
            return
        raw, blocks = data[:MAX_TEXT_PART], []
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
    headers, body = _split_headers(data[start:], defects)
    if not headers:
        raise MailParseError("no header fields found")

    walk = _Walk(defects)
    walk.entity(headers, body, 0)
    texts = walk.texts or [(html_to_text(t), cs) for t, cs in walk.htmls]
    charset = texts[0][1] if texts else None
    body_text = "\n\n".join(t.strip() for t, _ in texts if t.strip())
    if len(body_text) > MAX_BODY_TEXT:
        body_text = body_text[:MAX_BODY_TEXT]
        defects.append("body_truncated")

    subject = " ".join(decode_words(header_text(headers.get("subject"), charset)).split())
    from_header = decode_words(header_text(headers.get("from"), charset))
    from_address = parseaddr(header_text(headers.get("from"))[:2048])[1] or None
    message_id = " ".join(header_text(headers.get("message-id")).split())[:998] or None
    if message_id is None:
        defects.append("no_message_id")
    date = parse_date(header_text(headers.get("date")).strip(), defects)

    attachments = tuple(walk.attachments)
    hints = extract_hints(
        subject,
        body_text,
        {"from": from_header, "x-mailer": header_text(headers.get("x-mailer"))},
        [a.filename for a in attachments if a.filename],
    )
    return ParsedMail(
        subject=subject,
        from_address=from_address,
        message_id=message_id,
        date=date,
        event_time=hints.event_time or date,
        event_type=hints.event_type or subject or None,
        channel=hints.channel,
        camera_name=hints.camera_name,
        vendor=hints.vendor,
        body_text=body_text,
        charset=charset,
        attachments=attachments,
        defects=tuple(dict.fromkeys(defects)),
        is_test=is_test_mail(subject, body_text, len(attachments), hints),
        device_name=hints.device_name,
    )
