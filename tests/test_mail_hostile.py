"""A hostile corpus for ``parse_mail``: one named test per attack or breakage.

Every case must come back promptly with a ``ParsedMail`` or a
``MailParseError`` that wraps nothing (the catch-all in ``parse_mail`` turns an
unforeseen exception into ``MailParseError`` with a ``__cause__``; that would
be a bug we failed to see).  Time bounds are asserted only where they guard
against a quadratic blow-up, and are generous (5 s) for slow CI machines; the
linear code takes milliseconds.
"""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from urllib.parse import quote

import pytest
from mailmaker import base64_lines, jpeg
from PIL import Image

from vmond.ingest import mailparse
from vmond.ingest.mailparse import MailParseError, ParsedMail, parse_mail
from vmond.ingest.mimetext import decode_words

SLOW = 5.0  # seconds; a quadratic path would take minutes on these sizes


def parse_hostile(raw: bytes, bound: float | None = None) -> ParsedMail:
    start = time.perf_counter()
    try:
        parsed = parse_mail(raw)
    except MailParseError as exc:
        assert exc.__cause__ is None, f"unforeseen exception wrapped: {exc}"
        raise
    if bound is not None:
        assert time.perf_counter() - start < bound
    return parsed


def entity(headers: bytes, body: bytes) -> bytes:
    """Headers given as bytes (CRLF-separated, no final CRLF) so that any byte survives."""
    return headers + b"\r\n\r\n" + body


def image_part(data: bytes, extra: bytes = b"") -> bytes:
    return entity(b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64" + extra, base64_lines(data))


def multipart(parts: list[bytes], boundary: bytes = b"B", subject: bytes = b"alarm") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"
    head = b'From: cam@cam.lan\r\nSubject: ' + subject + b'\r\nContent-Type: multipart/mixed; boundary="'
    return entity(head + boundary + b'"', body)


# --- size and structure bounds ------------------------------------------------------------


def test_ten_thousand_parts_hit_the_part_bound() -> None:
    first, rest = jpeg(color="blue"), jpeg()
    parsed = parse_hostile(multipart([image_part(first)] + [image_part(rest)] * 9_999), SLOW)
    assert "too_many_parts" in parsed.defects
    # The mail itself is one of the MAX_PARTS entities walked; the first parts' images are kept.
    assert len(parsed.images) == mailparse.MAX_PARTS - 1
    assert parsed.images[0].data == first
    assert all(image.data == rest for image in parsed.images[1:])


def test_thousand_deep_multipart_nesting_hits_the_depth_bound() -> None:
    inner = image_part(jpeg())
    for level in range(1000):
        boundary = b"L%d" % level
        inner = entity(b'Content-Type: multipart/mixed; boundary="' + boundary + b'"',
                       b"--" + boundary + b"\r\n" + inner + b"\r\n--" + boundary + b"--")
    parsed = parse_hostile(b"Subject: deep\r\n" + inner, SLOW)
    assert "too_deep" in parsed.defects
    assert parsed.images == ()


def test_thousand_deep_forwarded_messages_hit_the_depth_bound() -> None:
    inner = b"Subject: innermost\r\n" + image_part(jpeg())
    for _ in range(1000):
        inner = entity(b"Subject: fwd\r\nContent-Type: message/rfc822", inner)
    parsed = parse_hostile(inner, SLOW)
    assert "too_deep" in parsed.defects
    assert parsed.subject == "fwd"


def test_two_megabyte_header_block_is_skipped_not_made_the_body() -> None:
    junk = b"".join(b"X-Junk-%d: v\r\n" % i for i in range(150_000))
    assert len(junk) > 2_000_000
    raw = (b"Subject: alarm\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n" + junk
           + b"\r\n--B\r\n" + entity(b"Content-Type: text/plain", b"channel 3 motion")
           + b"\r\n--B\r\n" + image_part(jpeg()) + b"\r\n--B--\r\n")
    parsed = parse_hostile(raw, SLOW)
    assert "too_many_headers" in parsed.defects
    # The header lines past the bound are dropped, so the multipart body is still split.
    assert parsed.body_text == "channel 3 motion"
    assert len(parsed.images) == 1


def test_two_megabyte_folded_header_is_bounded() -> None:
    raw = b"Subject: start" + b"\r\n continued" * 200_000 + b"\r\nFrom: cam@cam.lan\r\n\r\nbody"
    parsed = parse_hostile(raw, SLOW)
    assert parsed.subject.startswith("start continued")
    assert len(parsed.subject) <= mailparse.MAX_HEADER_VALUE
    assert parsed.body_text == "body"  # not the rest of the folded header


def test_single_two_megabyte_header_line() -> None:
    parsed = parse_hostile(b"Subject: " + b"A" * 2_000_000 + b"\r\nFrom: cam@cam.lan\r\n\r\nbody", SLOW)
    assert set(parsed.subject) == {"A"} and len(parsed.subject) <= mailparse.MAX_HEADER_VALUE
    assert (parsed.from_address, parsed.body_text) == ("cam@cam.lan", "body")


def test_single_two_megabyte_line_without_a_colon_ends_the_headers() -> None:
    parsed = parse_hostile(b"Subject: s\r\n" + b"X" * 2_000_000 + b"\r\n\r\nbody", SLOW)
    assert parsed.subject == "s"
    assert "missing_header_separator" in parsed.defects
    assert len(parsed.body_text) <= mailparse.MAX_BODY_TEXT


# --- lying types ----------------------------------------------------------------------------


def test_tiff_named_snapshot_jpg_is_not_an_image() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "TIFF")
    disposition = b'\r\nContent-Disposition: attachment; filename="snapshot.jpg"'
    parsed = parse_hostile(multipart([image_part(out.getvalue(), disposition)]))
    [attachment] = parsed.attachments
    assert (attachment.content_type, attachment.declared_type) == ("image/tiff", "image/jpeg")
    assert attachment.filename == "snapshot.jpg"
    assert not attachment.is_image and parsed.images == ()
    assert "image_magic_mismatch" in parsed.defects


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_claiming_100000_squared_pixels_is_only_sniffed(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10^10 pixels, and an IDAT that inflates to 50 MB: decoding would be slow and huge.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(bytes(50_000_000), 9)) + _chunk(b"IEND", b""))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parser decoded the picture")

    # Pixel limits are the image checker's job; the parser must not open or inflate anything.
    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(zlib, "decompress", refuse)
    monkeypatch.setattr(zlib, "decompressobj", refuse)
    raw = multipart([entity(b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64", base64_lines(bomb))])
    parsed = parse_hostile(raw, SLOW)
    [image] = parsed.images
    assert (image.content_type, image.data) == ("image/png", bomb)


# --- names and text ------------------------------------------------------------------------

# (name as the camera sent it, what the parser keeps).  What remains of a hostile
# name: its last path component, without C0/C1 controls, NUL, DEL or format
# characters (the bidi overrides), trimmed; a name of dots only is no name.
HOSTILE_NAMES = [
    ("../../etc/passwd", "passwd"),
    ("/etc/shadow", "shadow"),
    ("..\\..\\Windows\\win.ini", "win.ini"),
    ("C:\\snap\\x.jpg", "x.jpg"),
    ("a\x00b.jpg", "ab.jpg"),
    ("snap\x01\x1b[31m\x7f.jpg", "snap[31m.jpg"),
    ("\x85cam\x9b.jpg", "cam.jpg"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),  # would display as "invoiceexe.jpg"
    ("\u2066\u200fcam.jpg\u2069", "cam.jpg"),
    ("..", None),
    ("../", None),
    ("/", None),
    (" \t ", None),
    ("a\uff0fb\u2215c.jpg", "a\uff0fb\u2215c.jpg"),  # look-alike slashes separate nothing: kept
    ("前门 1.jpg", "前门 1.jpg"),
]


@pytest.mark.parametrize(("name", "kept"), HOSTILE_NAMES)
def test_hostile_filenames_are_cleaned(name: str, kept: str | None) -> None:
    encoded = quote(name, safe="").encode()  # RFC 2231 carries every character, NUL included
    forms = [
        b"\r\nContent-Disposition: attachment; filename*=UTF-8''" + encoded,
        b'\r\nContent-Disposition: attachment; filename="=?UTF-8?B?' + base64.b64encode(name.encode()) + b'?="',
    ]
    if '"' not in name and "\\" not in name:  # raw bytes in a quoted string, as firmware writes them
        forms.append(b'\r\nContent-Disposition: attachment; filename="' + name.encode() + b'"')
    for form in forms:
        [image] = parse_hostile(multipart([image_part(jpeg(), form)])).images
        assert image.filename == kept, form
        if image.filename is not None:
            assert not set(image.filename) & {"/", "\\", "\x00"} and image.filename.isprintable()


def test_script_in_subject_and_filename_is_kept_as_text() -> None:
    subject = b"<script>alert(1)</script>\x00\x1b[2J <b onmouseover=x>"
    name = b"<img src=x onerror=alert(1)>.jpg"
    parts = [
        entity(b"Content-Type: text/plain", b"<script>alert('body')</script>\x07"),
        image_part(jpeg(), b'\r\nContent-Disposition: attachment; filename="' + name + b'"'),
        image_part(jpeg(), b'\r\nContent-Disposition: attachment; filename="<script>x</script>.jpg"'),
    ]
    parsed = parse_hostile(multipart(parts, subject=subject))
    # Escaping is the web layer's job: markup comes back verbatim, only the controls are gone.
    assert parsed.subject == "<script>alert(1)</script>[2J <b onmouseover=x>"
    assert parsed.body_text == "<script>alert('body')</script>"
    assert [a.filename for a in parsed.images] == [name.decode(), "script>.jpg"]  # "/" ends a path


def test_control_characters_in_encoded_words_are_dropped() -> None:
    parsed = parse_hostile(b"Subject: =?utf-8?q?Gate=00=1b=7f=C2=85_<script>?=\r\nMessage-ID: <a\x01b@c>\r\n\r\nx\x00y")
    assert parsed.subject == "Gate <script>"
    assert parsed.message_id == "<ab@c>"
    assert parsed.body_text == "xy"


# --- broken encodings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "undecodable"),
    [
        (b"!!!@@@###$$$%%%\r\n\x00\xfe" * 1000, True),
        (b"A", True),  # one character cannot hold a byte
        (b"====", True),
        (b"\xff\xd8\xff", True),
        (bytes(range(256)) * 100, False),  # its 64 alphabet characters decode to junk
        (b"QUJD" * 1000 + b"!" + b"A" * 4001, False),  # bad padding, repaired
    ],
)
def test_garbage_base64_part(garbage: bytes, undecodable: bool) -> None:
    parts = [entity(b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64", garbage)]
    parsed = parse_hostile(multipart(parts), SLOW)
    assert ("undecodable_part" in parsed.defects) == undecodable
    if undecodable:
        # Nothing decoded: the part is kept as it came and sniffed as it stands, so a
        # bare JPEG signature counts as an image; the image checker rejects such stubs.
        assert [a.data for a in parsed.attachments] == [garbage]
    else:
        assert parsed.images == ()  # what the junk decodes to has no JPEG signature
        assert "image_magic_mismatch" in parsed.defects
    assert sum(len(a.data) for a in parsed.attachments) <= len(garbage)


def test_quoted_printable_soft_break_storm() -> None:
    head = b"Subject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert parse_hostile(head + b"=\r\n" * 1_000_000 + b"tail", SLOW).body_text == "tail"
    assert parse_hostile(head + b"=" * 3_000_000, SLOW).body_text  # lone "=" signs: kept, bounded
    assert parse_hostile(head + b"=0" * 1_000_000, SLOW)


def test_encoded_word_storm_in_subject() -> None:
    words = b" ".join(b"=?utf-8?q?w%d?=" % i for i in range(10_000))
    parsed = parse_hostile(b"Subject: " + words + b"\r\n\r\nbody", SLOW)
    assert parsed.subject.startswith("w0w1w2w3")  # adjacent words join without the blank
    assert len(parsed.subject) <= mailparse.MAX_HEADER_VALUE
    folded = b"\r\n ".join(b"=?x-charset-%d?b?QUJD?=" % i for i in range(10_000))  # a charset each
    assert parse_hostile(b"Subject: " + folded + b"\r\n\r\nbody", SLOW).subject.startswith("ABCABC")
    # The decoder itself, unbounded by the header limit, stays linear.
    start = time.perf_counter()
    assert decode_words(words.decode()).startswith("w0w1")
    assert time.perf_counter() - start < SLOW


def test_boundary_text_inside_base64_data() -> None:
    data = jpeg((64, 64))
    lines = base64_lines(data).split(b"\r\n")
    lines[3] = lines[3][:10] + b"--B--" + lines[3][10:]  # not at a line start: not a delimiter
    parsed = parse_hostile(multipart([entity(b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64",
                                      b"\r\n".join(lines))]))
    assert len(parsed.attachments) == 1 and "bad_boundary" not in parsed.defects
    # A boundary made of base64 letters that occurs inside the encoded lines.
    boundary = base64.b64encode(data)[200:240]
    assert boundary in b"".join(base64_lines(data).split())
    parsed = parse_hostile(multipart([image_part(data)], boundary=boundary))
    assert [a.data for a in parsed.images] == [data]


def test_delimiter_line_inside_base64_data_splits_the_part() -> None:
    # RFC 2046: a delimiter line is a delimiter, wherever it appears.  The image is
    # cut short, and the rest becomes a headerless part; nothing raises.
    lines = base64_lines(jpeg((64, 64))).split(b"\r\n")
    lines.insert(3, b"--B")
    parsed = parse_hostile(multipart([entity(b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64",
                                      b"\r\n".join(lines))]))
    assert len(parsed.images) == 1
    assert "missing_header_separator" in parsed.defects


def test_uuencoded_line_with_junk_in_its_padding() -> None:
    # "!" declares one byte, which "AB" holds; "CD" is junk where padding belongs.
    # binascii.a2b_uu raises "Trailing garbage" on it, which used to escape the parser.
    body = b"begin 644 x.bin\n!ABCD\n\"ABC!\n`\nend\n"
    part = entity(b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode", body)
    parsed = parse_hostile(multipart([part]))
    assert len(parsed.attachments[0].data) == 3
    assert "bad_uuencode_line" in parsed.defects
    parsed = parse_hostile(b"Subject: s\r\n\r\nmotion\nbegin 644 x.bin\n!ABCD\n`\nend\n")  # in a text body
    assert parsed.body_text == "motion"


# --- nothing much at all ------------------------------------------------------------------------


def test_empty_message() -> None:
    with pytest.raises(MailParseError):
        parse_hostile(b"")


def test_message_with_only_headers() -> None:
    parsed = parse_hostile(b"Subject: Motion Detection\r\nFrom: cam@cam.lan")
    assert (parsed.subject, parsed.body_text, parsed.attachments) == ("Motion Detection", "", ())
    assert parsed.event_type == "Motion Detection"


def test_five_megabytes_of_newlines() -> None:
    with pytest.raises(MailParseError):
        parse_hostile(b"\n" * 5_000_000, SLOW)
    with pytest.raises(MailParseError):
        parse_hostile(b"\r" * 5_000_000, SLOW)  # old Mac line ends
    parsed = parse_hostile(b"Subject: s\r\n\r\n" + b"\n" * 5_000_000, SLOW)
    assert (parsed.subject, parsed.body_text) == ("s", "")
