"""Split raw MIME entities: header blocks and multipart bodies, with hard bounds.

``email.parser`` is not used for the structure: its feed parser builds the
whole tree before part count or depth could be bounded, and it folds a mangled
closing delimiter (``----boundary--``) into the last attachment.  Here each
header block is scanned for at most ``MAX_HEADER_LINES`` lines and each
multipart level is one linear regex scan that skips from line to line in C,
yielding parts lazily so that the caller can stop at its part bound.
Parameters (boundary, filename, charset) are left to a compat32 ``Message``
built from bounded values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import Message
from itertools import chain

from vmond.ingest.mimetext import header_text, search_lines

__all__ = ["MAX_HEADER_LINES", "MAX_HEADER_VALUE", "content_type", "params", "split_headers", "split_multipart"]

MAX_HEADER_LINES = 1000  # per header block, continuations included
MAX_HEADER_VALUE = 8 * 1024  # bytes kept of one header value

_FIELD_NAME = re.compile(rb"([!-9;-~]{1,128})[ \t]*:")
# The line that ends a header block: empty or blank (what bytes.strip() removes).
_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*(?:\n|\Z)")


def split_headers(data: bytes, defects: list[str]) -> tuple[dict[str, bytes], bytes]:
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
            # Skip the rest of the block in C rather than make it the body: the
            # body would start with header junk (a 10,000-word folded subject).
            defects.append("too_many_headers")
            blank = _BLANK_LINE.search(data, end)
            body = data[blank.end() :] if blank else b""
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


def params(headers: dict[str, bytes]) -> Message:
    """Content-Type and Content-Disposition in a ``Message`` for their parameters.

    compat32 stores values verbatim and parses parameters (RFC 2231 included)
    on demand; the ``default`` policy's strict header parser raises or mangles
    on camera headers.
    """
    msg = Message()
    for name in ("content-type", "content-disposition"):
        if name in headers:
            msg[name] = header_text(headers[name])
    return msg


_CTYPE = re.compile(r"\s*([\w!#$&^.+-]+)\s*/\s*([\w!#$&^.+-]+)")


def content_type(headers: dict[str, bytes]) -> str:
    match = _CTYPE.match(header_text(headers.get("content-type")))
    return f"{match.group(1)}/{match.group(2)}".lower() if match else "text/plain"


# "(?=\n|\Z)" is a multi-line "$" that leaves the line end to the next search.
_LINE_END = rb"[ \t]*\r?(?=\n|\Z)"


def _delimiters(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool, bool]]:
    """Yield (line start, line end, is_close, mangled) for each delimiter line.

    Tolerates extra or missing dashes around the boundary (``----b--``) and
    trailing blanks; the regex engine does the scanning, so this is linear.
    """
    core = boundary.strip(b"-")
    if not core:  # an all-dash boundary: exact matches only
        exact = rb"--" + re.escape(boundary) + rb"(--)?" + _LINE_END
        for start, m in search_lines(exact, body):
            yield start, m.end(), m.group(1) is not None, False
        return
    lead0 = len(boundary) - len(boundary.lstrip(b"-")) + 2
    trail0 = len(boundary) - len(boundary.rstrip(b"-"))
    for start, m in search_lines(rb"(--+)" + re.escape(core) + rb"(-*)" + _LINE_END, body):
        lead, trail = len(m.group(1)), len(m.group(2))
        close = trail >= trail0 + 2
        yield start, m.end(), close, lead != lead0 or trail not in (trail0, trail0 + 2)


# A delimiter line followed by a part header: the boundary the mail really uses.
_GUESS = rb"--([!-~]{1,200})[ \t]*\r?(?=\n[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-)"


def split_multipart(body: bytes, boundary: bytes, defects: list[str]) -> Iterator[bytes] | None:
    """Yield part bytes lazily; None when no delimiter for any boundary is found."""
    delims = _delimiters(body, boundary) if boundary else iter(())
    first = next(delims, None)
    if first is None:
        guess = next(search_lines(_GUESS, body), None)
        if guess is None:
            return None
        defects.append("bad_boundary")
        delims = _delimiters(body, guess[1].group(1))
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
