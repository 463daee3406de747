"""Tolerant uudecoding for camera mail attachments.

Some camera firmware (e.g. community builds for Xiaomi Dafang cameras) sends
snapshots with ``Content-Transfer-Encoding: uuencode``; a few older devices put a
``begin 644 name`` block straight into a text/plain body.  The stdlib ``uu``
module is gone from Python 3.13, and ``binascii.a2b_uu`` raises on the first
odd line, so this module decodes line by line and repairs what it can.

Repair policy: a line with out-of-range characters is decoded modulo 64 (as a
hand decoder would), and every line is padded or truncated to the byte count
its length character declares.  Keeping each line at its declared length means
one corrupt line damages only its own 45 bytes instead of shifting everything
after it, which matters for JPEG snapshots.

Dot-stuffing: an SMTP client sends a line that begins with "." as "..".  Some
clients stuff after a bare LF too, while servers undo it only after CRLF, so the
line of a 14-byte remainder (length character ".") can arrive with one dot too
many.  Such a line is one character longer than its length character implies.
One dot is dropped only when the line as it stands is inconsistent (non-zero
padding bits, or junk past its length) and without the dot it is clean (see
``_undo_dot_stuffing``), so a well-formed line that begins with ".." is kept.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from vmond.ingest.mimetext import search_lines

__all__ = ["UUBlock", "decode_uu", "find_uu_blocks", "split_uu_blocks"]

# "begin <mode> <name>"; a "begin" line without an octal mode is still accepted
# inside a part labelled uuencode, but not when scanning prose (see below).
# Greedy name group (stripped later): a lazy one backtracks quadratically on
# a hostile line full of blanks.  Both patterns are searched at line starts
# (``search_lines``) and leave the line end unconsumed.
_BEGIN = rb"begin[ \t]+([0-7]{3,4}(?=[ \t]))?[ \t]*([^\r\n]*)"
_END = rb"end[ \t]*\r?(?=\n|\Z)"
# Full lines, "M" and 60 characters for 45 bytes, are the bulk of every file.  A
# run of them is decoded at once in C: without their length characters and line
# ends, and mapped to the base64 alphabet (same 6-bit digits), it is base64.
_FULL_LINES = re.compile(rb"(?:M[ -`]{60}\r?\n)+")
_UU_DIGITS = bytes(range(32, 97))  # "`" is a zero like " "
_BASE64_DIGITS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_AS_BASE64 = bytes.maketrans(_UU_DIGITS, bytes(_BASE64_DIGITS[(c - 32) & 63] for c in _UU_DIGITS))
# Longest sensible payload line: length char + 4 * ceil(63 / 3) chars (+ slack).
_MAX_LINE = 200
_FOLD = bytes(32 + ((b - 32) & 63) for b in range(256))
_PAD = b" `\t"  # tolerated after a line's declared length: zero digits and blanks


@dataclass(frozen=True)
class UUBlock:
    """One uuencoded file found in a byte string."""

    filename: str | None
    data: bytes
    start: int  # offset of the "begin" line
    end: int  # offset just past the "end" line (or the end of the input)
    bad_lines: int  # lines that needed repair


def _zero_padding(body: bytes, count: int) -> bool:
    """Are the bits past ``count`` bytes in the encoded ``body`` all zero?

    Encoders pad the last group of a line with zero bytes, so a well-formed
    line has them; only the last three characters can hold padding bits.
    """
    spare = len(body) * 6 - count * 8
    value = 0
    for char in body[-3:]:
        value = value << 6 | ((char - 32) & 63)
    return spare <= 0 or value & ((1 << spare) - 1) == 0


def _undo_dot_stuffing(line: bytes) -> bytes:
    """Drop the extra dot of a dot-stuffed line whose length character is "."."""
    if not line.startswith(b".."):
        return line
    count = (line[0] - 32) & 63
    need = (count + 2) // 3 * 4
    if len(line) < need + 2 or line[need + 2 :].strip(_PAD):
        return line  # not one character longer (trailing padding aside)
    plain_ok = _zero_padding(line[1 : need + 1], count) and not line[need + 1 :].strip(_PAD)
    stuffed_ok = _zero_padding(line[2 : need + 2], count)
    return line[1:] if stuffed_ok and not plain_ok else line


def _decode_line(line: bytes) -> tuple[bytes, bool]:
    """Decode one uuencoded line; return (bytes, repaired)."""
    count = (line[0] - 32) & 63
    if count == 0:
        return b"", False
    need = (count + 2) // 3 * 4
    body = line[1 : 1 + need]
    try:
        # a2b_uu pads short lines with zero bits and checks the characters.
        out = binascii.a2b_uu(line[:1] + body)
        # Characters past the declared length are junk (checksums, garbage).
        repaired = bool(line[1 + need :].strip(_PAD))
        return out[:count], repaired
    except (binascii.Error, ValueError):
        pass
    # Out-of-range characters, or non-zero characters in the padding of the last
    # group ("!ABCD": one byte needs only "AB", and a2b_uu calls "CD" trailing
    # garbage): fold every byte into the alphabet (modulo 64, as a hand decoder
    # would) and give a2b_uu only the characters that hold data, which it pads.
    used = (count * 8 + 5) // 6
    return binascii.a2b_uu(line[: 1 + used].translate(_FOLD))[:count], True


def _full_digits(run: bytes) -> bytes | bytearray:
    """A run of full lines without the length character ("M") of each line."""
    stride, mixed = divmod(len(run), run.count(b"\n"))
    if mixed:  # LF and CRLF lines: no fixed stride
        return run.replace(b"\nM", b"\n")[1:]
    digits = bytearray(run)
    del digits[::stride]  # one C pass, where replace() searches for each line start
    return digits


def decode_uu(data: bytes) -> tuple[bytes, int]:
    """Decode uuencoded ``data`` (with or without begin/end lines).

    Returns ``(decoded, bad_lines)``.  Never raises for malformed input.
    """
    out = bytearray()
    bad = 0
    begin = next(search_lines(_BEGIN, data), None)
    pos = 0  # no "begin": everything is payload
    if begin is not None:
        after = data.find(b"\n", begin[1].end())
        pos = len(data) + 1 if after < 0 else after + 1
    clean = True  # the last line needed no repair: worth trying the fast path again
    while pos <= len(data):
        full = _FULL_LINES.match(data, pos) if clean else None
        if full is not None:
            out += binascii.a2b_base64(_full_digits(full.group()).translate(_AS_BASE64, b"\r\n"))
            pos = full.end()
            continue
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].rstrip(b"\r")
        pos = end + 1
        if not line.strip():
            continue
        if line.startswith(b"end"):  # "e" is outside the uu alphabet: never payload
            break
        if len(line) > _MAX_LINE:
            bad += 1
            clean = False
            continue
        chunk, repaired = _decode_line(_undo_dot_stuffing(line))
        bad += repaired
        clean = not repaired
        out += chunk
    return bytes(out), bad


def _looks_uu(text: bytes, pos: int) -> bool:
    """Is the line after ``pos`` (the end of a begin line) a uuencoded line?"""
    start = text.find(b"\n", pos) + 1
    end = text.find(b"\n", start)
    line = text[start : end if end >= 0 else len(text)].rstrip(b"\r")
    if not start or not line or not all(32 <= c <= 96 for c in line):
        return False
    count = (line[0] - 32) & 63
    # Transports may strip trailing blanks (zero bits), so short lines are fine.
    return 0 < count and len(line) - 1 <= (count + 2) // 3 * 4 + 2


def find_uu_blocks(text: bytes, limit: int = 50) -> list[UUBlock]:
    """Find ``begin ... end`` blocks embedded in a text body (at most ``limit``)."""
    blocks: list[UUBlock] = []
    pos = 0  # the end of the last block
    for start, begin in search_lines(_BEGIN, text):
        if len(blocks) >= limit:
            break
        if start < pos:  # a line of the last block
            continue
        if begin.group(1) is None or not _looks_uu(text, begin.end()):
            continue  # "begin" in prose, not "begin 644 name" + data
        end = next(search_lines(_END, text, begin.end()), None)
        stop = end[1].end() if end else len(text)
        data, bad = decode_uu(text[start:stop])
        name = begin.group(2).decode("utf-8", "replace").strip() or None
        blocks.append(UUBlock(name, data, start, stop, bad))
        pos = stop
    return blocks


def split_uu_blocks(text: bytes, limit: int = 50) -> tuple[bytes, list[UUBlock]]:
    """Return ``text`` without its uuencoded blocks, and the blocks."""
    if b"begin " not in text:
        return text, []
    blocks = find_uu_blocks(text, limit)
    kept, pos = [], 0
    for block in blocks:
        kept.append(text[pos : block.start])
        pos = block.end
    return b"".join(kept) + text[pos:], blocks
