"""Tests for vmond.ingest.mailparse: the sample camera mails and each hard case."""

from __future__ import annotations

import base64
import binascii
import io
import random
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import EXPECTED, MAIL_DIR, sample
from mailmaker import base64_lines, jpeg
from PIL import Image

from vmond.ingest import mailparse
from vmond.ingest.mailparse import Attachment, MailParseError, ParsedMail, parse_mail
from vmond.ingest.mimetext import decode_words, html_to_text, sniff_type

CHECKED_KEYS = ("subject", "images", "event_type", "channel", "camera_name", "event_time", "charset")


def parsed_sample(name: str) -> ParsedMail:
    """A sample camera mail, parsed (``conftest.sample`` gives its bytes)."""
    return parse_mail(sample(name))


def png(size: tuple[int, int] = (16, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "blue").save(out, "PNG")
    return out.getvalue()


def message(headers: str, body: bytes, eol: bytes = b"\r\n") -> bytes:
    head = eol.join(line.encode("utf-8") for line in headers.strip("\n").splitlines())
    return head + eol + eol + body


def part(headers: str, body: bytes) -> bytes:
    return message(headers, body)


def multipart(parts: list[bytes], boundary: str = "XYZ", close: bytes | None = None, headers: str = "") -> bytes:
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts)
    body += (close if close is not None else b"--" + b + b"--") + b"\r\n"
    head = f"From: cam@cam.lan\nSubject: alarm\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n{headers}"
    return message(head, body)


def assert_real_image(attachment: Attachment) -> None:
    assert attachment.is_image
    assert attachment.data[:3] == b"\xff\xd8\xff" or attachment.data[:8] == b"\x89PNG\r\n\x1a\n"
    Image.open(io.BytesIO(attachment.data)).verify()


# --- the sample mails -------------------------------------------------------------


def test_every_sample_has_an_expectation() -> None:
    mails = sorted(p.name for p in MAIL_DIR.glob("*.eml"))
    assert mails
    assert sorted(EXPECTED) == mails


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_matches_expected(name: str) -> None:
    expected = EXPECTED[name]
    parsed = parsed_sample(name)
    actual = {
        "subject": parsed.subject,
        "images": len(parsed.images),
        "event_type": parsed.event_type,
        "channel": parsed.channel,
        "camera_name": parsed.camera_name,
        "event_time": parsed.event_time.isoformat() if parsed.event_time else None,
        "charset": parsed.charset,
    }
    checked = {key: expected[key] for key in CHECKED_KEYS if key in expected}
    assert checked, "expected.json lists nothing to check"
    assert {key: actual[key] for key in checked} == checked


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_images_are_real_images(name: str) -> None:
    raw = sample(name)
    parsed = parse_mail(raw)
    for image in parsed.images:
        assert_real_image(image)
    assert sum(len(a.data) for a in parsed.attachments) <= len(raw)
    assert parse_mail(raw) == parsed  # a pure function of the bytes


def test_amcrest_sample() -> None:
    parsed = parsed_sample("amcrest-tamper.eml")
    assert parsed.vendor == "dahua"
    assert parsed.from_address is None  # "From: <>"
    assert parsed.date == datetime(2018, 5, 6, 15, 28, 45, tzinfo=timezone(timedelta(hours=-6)))
    assert parsed.charset == "utf-8"
    assert parsed.body_text.startswith("Alarm Event: Tamper Detect\nAlarm Input Channel: 1\n")
    [image] = parsed.attachments
    assert (image.content_type, image.declared_type) == ("image/jpeg", "application/octet-stream")
    assert image.filename == "20180506152840423ch01.jpg"
    assert Image.open(io.BytesIO(image.data)).size == (1920, 1080)
    assert "no_message_id" in parsed.defects
    assert "bad_boundary" not in parsed.defects
    assert not parsed.is_test


def test_hikvision_sample_gb2312() -> None:
    parsed = parsed_sample("hikvision-ipc-intrusion.eml")
    assert parsed.vendor == "hikvision"
    assert parsed.camera_name == "后门"  # CHANNEL NAME, GB2312 in an 8bit part
    assert "CHANNEL NAME: 后门" in parsed.body_text
    assert parsed.device_name == "ORTO"
    assert parsed.date is None
    assert parsed.event_time == datetime(2015, 5, 22, 14, 52, 18)
    assert [a.filename for a in parsed.images] == [
        f"ORTO_01_2015052214521800{i}_INTRUSION.jpg" for i in range(3)
    ]
    assert {"no_date", "no_message_id"} <= set(parsed.defects)


def test_reolink_sample_alarm_without_image_is_not_a_test() -> None:
    parsed = parsed_sample("reolink-person.eml")
    assert parsed.vendor == "reolink"
    assert parsed.attachments == ()
    assert not parsed.is_test
    assert parsed.date is None and parsed.message_id is None
    assert {"no_date", "no_message_id"} <= set(parsed.defects)
    assert parsed.from_address == "mycamera@example.com"
    assert parsed.body_text == 'A person was detected by camera "My Camera"!'
    assert parsed.camera_name == "My Camera"
    assert parsed.event_type == "Person Detected"


def test_nvr_sample_naive_date_and_broken_close() -> None:
    parsed = parsed_sample("nvr-fn3108xe-motion.eml")
    assert parsed.date == datetime(2020, 12, 21, 5, 1, 38)
    assert parsed.date.tzinfo is None
    assert parsed.event_time == datetime(2020, 12, 21, 2, 1, 38)  # the subject wins over Date
    assert parsed.subject.endswith("02:01:38")  # trailing space stripped
    [image] = parsed.attachments
    assert image.declared_type == "application/x-msdownload"
    assert image.content_type == "image/jpeg"
    assert image.data.endswith(b"\xff\xd9")  # the mangled close did not leak into the JPEG
    assert "bad_boundary" in parsed.defects
    assert parsed.vendor == "generic-nvr"


def test_dafang_sample_uuencode_bare_lf() -> None:
    raw = sample("dafang-uuencode.eml")
    assert b"\r\n" not in raw
    parsed = parse_mail(raw)
    assert [a.filename for a in parsed.images] == [f"{i}capture.jpg" for i in range(1, 6)]
    assert all(a.data.endswith(b"\xff\xd9") for a in parsed.images)
    assert parsed.body_text == "Motion was detected"
    assert parsed.vendor == "dafang"
    assert "bad_uuencode_line" not in parsed.defects


def test_swann_sample_quoted_printable() -> None:
    parsed = parsed_sample("swann-nvr-human.eml")
    assert parsed.vendor == "swann"
    assert parsed.message_id == "<nvr8-0001@cam.lan>"
    assert parsed.device_name == "NVR8-8580RN"
    assert parsed.defects == ()
    assert parsed.date == datetime(2024, 2, 7, 13, 9, 1, tzinfo=UTC)


# --- encodings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("=?UTF-8?B?SGVsbG8gV29ybGQ?=", "Hello World"),  # padding missing
        ("=?UTF-8?B?SGVsbG8gV29ybGQ=?=", "Hello World"),  # one "=" too few
        ("=?utf-8?b?SGVsbG8===?=", "Hello"),  # too many
        ("=?UTF-8?B?SGVsbG8gV29ybGQx?=", "Hello World1"),
        ("=?ISO-8859-1?Q?Cam=E9ra_1?=", "Caméra 1"),
        ("=?UTF-8?B?5pE=?= =?UTF-8?B?hOWDjw==?=", "摄像"),  # a character split across words
        ("Alarm: =?gb2312?B?uvPDxQ==?= now", "Alarm: 后门 now"),
        ("=?utf-8*en?q?Front_door?=", "Front door"),  # RFC 2231 language suffix
        ("=?x-unknown?q?abc?=", "abc"),
        ("plain =?broken", "plain =?broken"),
    ],
)
def test_decode_words(encoded: str, decoded: str) -> None:
    assert decode_words(encoded) == decoded


def test_mis_padded_subject_folded_and_normalised() -> None:
    raw = message(
        "From: cam@cam.lan\nSubject: =?UTF-8?B?UGVyc29uIERldGVjdGVk?=\n =?UTF-8?B?ICBieSAgRG9vcg?=  \n",
        b"hi\r\n",
    )
    assert parse_mail(raw).subject == "Person Detected by Door"


def test_rfc2231_and_rfc2047_filenames_are_decoded_and_sanitised() -> None:
    image = base64_lines(jpeg())
    parts = [
        part("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
             "Content-Disposition: attachment; filename*=UTF-8''%E5%89%8D%E9%97%A8.jpg", image),
        part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64\n"
             "Content-Disposition: attachment;\n filename*0*=UTF-8''%E5%90%8E; filename*1*=%E9%97%A8.jpg", image),
        part('Content-Type: image/jpeg; name="=?UTF-8?B?5L6n6Zeo?=.jpg"\nContent-Transfer-Encoding: base64', image),
        part('Content-Type: image/jpeg\nContent-Transfer-Encoding: base64\n'
             'Content-Disposition: attachment; filename="../../etc/\x01pass\twd.jpg"', image),
        part('Content-Type: image/jpeg\nContent-Transfer-Encoding: base64\n'
             'Content-Disposition: attachment; filename="C:\\\\snap\\\\..\\\\x.jpg"', image),
        part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", image),
    ]
    parsed = parse_mail(multipart(parts))
    assert [a.filename for a in parsed.images] == ["前门.jpg", "后门.jpg", "侧门.jpg", "passwd.jpg", "x.jpg", None]


def test_gb2312_body_and_raw_8bit_subject() -> None:
    raw = message(
        "From: ipc@cam.lan\nContent-Type: text/plain; charset=GB2312\nContent-Transfer-Encoding: 8bit",
        "事件类型: 移动侦测\r\n通道名称: 大门\r\n通道号: 02\r\n事件时间: 2021-03-04 05:06:07\r\n".encode("gb2312"),
    )
    raw = b"Subject: " + "报警".encode("gb2312") + b"\r\n" + raw
    parsed = parse_mail(raw)
    assert parsed.charset == "gb2312"
    assert parsed.subject == "报警"  # raw 8-bit header read with the body's charset
    assert (parsed.event_type, parsed.camera_name, parsed.channel) == ("移动侦测", "大门", "2")
    assert parsed.event_time == datetime(2021, 3, 4, 5, 6, 7)


def test_quoted_printable_and_unknown_charset() -> None:
    raw = message(
        "Subject: x\nContent-Type: text/plain; charset=x-martian\nContent-Transfer-Encoding: quoted-printable",
        b"Cam=C3=A9ra =\r\nAvant =3D ok\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.body_text == "Caméra Avant = ok"
    assert parsed.charset == "x-martian"
    assert "unknown_charset" in parsed.defects


def test_html_only_body_is_reduced_to_text() -> None:
    markup = (
        b"<html><head><title>Alarm</title><style>p {color: red}</style></head><body>"
        b"<p>Motion&nbsp;detected &amp; <b>recorded</b></p><!-- a <p> comment -->"
        b"<div>Channel: 3</div><script>alert('x')</script><br>caf&eacute;</body></html>"
    )
    raw = multipart([part("Content-Type: text/html; charset=iso-8859-1", markup)])
    parsed = parse_mail(raw)
    assert parsed.body_text == "Motion detected & recorded\nChannel: 3\ncafé"
    assert parsed.charset == "iso-8859-1"
    assert parsed.channel == "3"


def test_plain_text_wins_over_html_alternative() -> None:
    alt = part(
        'Content-Type: multipart/alternative; boundary="ALT"',
        b"--ALT\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
        b"--ALT\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--ALT--\r\n",
    )
    assert parse_mail(multipart([alt])).body_text == "plain words"


def test_html_to_text_is_linear_on_hostile_markup() -> None:
    start = time.perf_counter()
    for hostile in ("<" * 200_000, "<!--" * 100_000, "<a " * 100_000, "&amp;" * 100_000):
        html_to_text(hostile)
    assert time.perf_counter() - start < 2.0
    assert html_to_text("a<b>b</b>c <unterminated") == "abc"


def test_uuencode_with_corrupt_line_keeps_the_rest_aligned() -> None:
    data = jpeg((64, 64), "green")
    lines = [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    good = lines[:]
    lines[3] = b"M" + b"abcdefghijklmnop" * 4  # lower case is outside the uu alphabet
    lines[5] = lines[5] + b"trailing garbage"
    body = b"begin 644 snap.jpg\n" + b"\n".join(lines) + b"\n`\nend\n"
    parsed = parse_mail(multipart([part("Content-Type: image/jpeg\nContent-Transfer-Encoding: x-uuencode", body)]))
    [image] = parsed.images
    assert len(image.data) == len(data)
    assert image.data[:135] == data[:135]  # lines 0-2 intact
    assert image.data[180:] == data[180:]  # everything after the corrupt line intact
    assert image.data != data
    assert "bad_uuencode_line" in parsed.defects
    # The uncorrupted encoding decodes exactly.
    clean = b"begin 644 snap.jpg\n" + b"\n".join(good) + b"\n`\nend\n"
    parsed = parse_mail(multipart([part("Content-Type: image/jpeg\nContent-Transfer-Encoding: uuencode", clean)]))
    assert parsed.images[0].data == data
    assert_real_image(parsed.images[0])


def test_dafang_sample_survives_dot_stuffing_after_bare_lf() -> None:
    raw = sample("dafang-uuencode.eml")
    stuffed = re.sub(rb"(?m)^\.", b"..", raw)  # what smtplib sends, even after a bare LF
    assert stuffed.count(b"\n..") == 1  # the last line of the 4th picture
    original, parsed = parse_mail(raw), parse_mail(stuffed)
    assert len(parsed.images) == 5
    assert [a.data for a in parsed.images] == [a.data for a in original.images]
    assert parsed.defects == original.defects
    for attachment in parsed.images:
        with Image.open(io.BytesIO(attachment.data)) as image:
            image.load()  # decodes every scan line, unlike verify()


def uu_part(data: bytes, last_line: bytes | None = None) -> bytes:
    lines = [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    if last_line is not None:
        lines[-1] = last_line
    body = b"begin 644 x.bin\n" + b"\n".join(lines) + b"\n`\nend\n"
    return part("Content-Type: application/octet-stream\nContent-Transfer-Encoding: uuencode", body)


def test_uuencoded_line_that_really_begins_with_two_dots_is_kept() -> None:
    # 14 bytes give the length character "."; a first byte 0x38-0x3B encodes as "." too.
    data = b"8" + bytes(range(200, 213))
    line = binascii.b2a_uu(data).rstrip(b"\n")
    assert line.startswith(b"..") and len(line) == 21
    for variant in (line, line + b"`", line + b"  ", line.rstrip(b" ")):
        parsed = parse_mail(multipart([uu_part(data, variant)]))
        assert parsed.attachments[0].data == data, variant
        assert "bad_uuencode_line" not in parsed.defects
    # The same line, dot-stuffed, is repaired.
    parsed = parse_mail(multipart([uu_part(data, b"." + line)]))
    assert parsed.attachments[0].data == data
    # As the last line of a longer file, after full lines.
    longer = (bytes(range(256)) * 2)[:495] + b";" + bytes(12) + b"\xd9"
    last = binascii.b2a_uu(longer[-14:]).rstrip(b"\n")
    assert len(longer) % 45 == 14 and last.startswith(b"..")
    for variant in (last, last + b"`", b"." + last):
        assert parse_mail(multipart([uu_part(longer, variant)])).attachments[0].data == longer


def test_uuencoded_block_inside_text_body() -> None:
    data = png()
    encoded = b"".join(binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))
    body = b"Motion on channel 4\nbegin 644 cap.png\n" + encoded + b"`\nend\nbegin the next sentence\n"
    parsed = parse_mail(message("Subject: alarm", body))
    [image] = parsed.images
    assert (image.filename, image.data) == ("cap.png", data)
    assert parsed.body_text.split("\n") == ["Motion on channel 4", "", "begin the next sentence"]


def test_base64_with_junk_and_bad_padding() -> None:
    data = jpeg()
    encoded = base64.b64encode(data).rstrip(b"=")
    body = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n!! -- **\r\n"
    parsed = parse_mail(multipart([part("Content-Type: image/jpeg\nContent-Transfer-Encoding: Base64", body)]))
    assert parsed.images[0].data == data


# --- types ------------------------------------------------------------------------------


def test_png_labelled_octet_stream_is_an_image() -> None:
    data = png()
    parsed = parse_mail(multipart([part('Content-Type: application/octet-stream; name="a.bin"\n'
                                        "Content-Transfer-Encoding: base64", base64_lines(data))]))
    [image] = parsed.images
    assert (image.content_type, image.declared_type, image.data) == ("image/png", "application/octet-stream", data)
    assert_real_image(image)


def test_gif_and_unknown_binary_are_not_images() -> None:
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, "GIF")
    blob = bytes(range(7, 250))
    parts = [
        part("Content-Type: image/gif\nContent-Transfer-Encoding: base64", base64_lines(gif.getvalue())),
        part("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64", base64_lines(gif.getvalue())),
        part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(blob)),
        part("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64", base64_lines(blob)),
        part("Content-Type: video/mp4\nContent-Transfer-Encoding: base64", base64_lines(b"\0\0\0\x18ftypmp42" + blob)),
    ]
    parsed = parse_mail(multipart(parts))
    assert [a.content_type for a in parsed.attachments] == [
        "image/gif", "image/gif", "application/octet-stream", "application/octet-stream", "video/mp4",
    ]
    assert [a.declared_type for a in parsed.attachments][2] == "image/jpeg"
    assert parsed.images == ()
    assert "image_magic_mismatch" in parsed.defects


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\nrest", "image/png"),
        (b"GIF89a...", "image/gif"),
        (b"%PDF-1.4", "application/pdf"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"\xff\xd8", None),
        (b"", None),
        (b"hello", None),
    ],
)
def test_sniff_type(data: bytes, kind: str | None) -> None:
    assert sniff_type(data) == kind


def test_text_that_starts_like_a_two_byte_signature_stays_text() -> None:
    # "MZ" (DOS executables) and 1f 8b (gzip) are too short to trust in a part labelled text.
    parsed = parse_mail(message("Subject: s\nContent-Type: text/plain", b"MZ-2 gate: motion\r\n"))
    assert (parsed.body_text, parsed.attachments) == ("MZ-2 gate: motion", ())
    exe = parse_mail(message("Subject: s\nContent-Type: text/plain", b"MZ\x90\x00\x03\x00\x00\x00"))
    assert [a.content_type for a in exe.attachments] == ["application/x-msdownload"]


def test_attachment_dataclass_interface() -> None:
    png_att = Attachment("image/png", "application/octet-stream", None, b"x")
    assert png_att.is_image
    assert not Attachment("image/gif", "image/gif", "a.gif", b"x").is_image


# --- structure ----------------------------------------------------------------------------


def test_bare_lf_and_missing_close_boundary() -> None:
    data = jpeg()
    raw = multipart([part("Content-Type: text/plain", b"channel 7 alarm"),
                     part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(data))],
                    close=b"")
    parsed = parse_mail(raw.replace(b"\r\n", b"\n"))
    assert parsed.images[0].data == data
    assert parsed.body_text == "channel 7 alarm"
    assert "bad_boundary" in parsed.defects


def test_wrong_boundary_parameter_is_guessed() -> None:
    data = jpeg()
    raw = multipart([part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(data))],
                    boundary="REAL")
    raw = raw.replace(b'boundary="REAL"', b'boundary="WRONG"')
    parsed = parse_mail(raw)
    assert parsed.images[0].data == data
    assert "bad_boundary" in parsed.defects


def test_multipart_without_any_delimiter_keeps_text() -> None:
    raw = message('Subject: s\nContent-Type: multipart/mixed; boundary="B"', b"just words\r\n")
    parsed = parse_mail(raw)
    assert parsed.body_text == "just words"
    assert "bad_boundary" in parsed.defects


def nest(inner: bytes, level: int, subtype: str) -> bytes:
    body = b"--L%d\r\n%s\r\n--L%d--" % (level, inner, level)
    return part(f'Content-Type: multipart/{subtype}; boundary="L{level}"', body)


def test_deep_nesting_hits_the_depth_bound() -> None:
    inner = part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(jpeg()))
    for level in range(300):
        inner = nest(inner, level, "mixed")
    start = time.perf_counter()
    parsed = parse_mail(b"Subject: deep\r\n" + inner)
    assert time.perf_counter() - start < 2.0
    assert "too_deep" in parsed.defects
    assert parsed.images == ()


def test_nesting_within_the_bound_is_walked() -> None:
    inner = part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(jpeg()))
    for level in range(mailparse.MAX_DEPTH - 1):
        inner = nest(inner, level, "related")
    parsed = parse_mail(b"Subject: nested\r\n" + inner)
    assert "too_deep" not in parsed.defects
    assert len(parsed.images) == 1


def test_thousands_of_parts_hit_the_part_bound_quickly() -> None:
    image = part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(jpeg((8, 8))))
    raw = multipart([image] * 20_000)
    start = time.perf_counter()
    parsed = parse_mail(raw)
    assert time.perf_counter() - start < 2.0
    assert "too_many_parts" in parsed.defects
    assert 0 < len(parsed.images) < mailparse.MAX_PARTS


def test_forwarded_message_rfc822_is_walked() -> None:
    inner = multipart([part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(jpeg()))])
    parsed = parse_mail(multipart([part("Content-Type: message/rfc822", inner)]))
    assert len(parsed.images) == 1


def test_many_headers_and_huge_header_are_bounded() -> None:
    raw = b"Subject: " + b"A " * 500_000 + b"\r\n" + b"X-H: v\r\n" * 50_000 + b"\r\nbody"
    start = time.perf_counter()
    parsed = parse_mail(raw)
    assert time.perf_counter() - start < 2.0
    assert len(parsed.subject) <= mailparse.MAX_HEADER_VALUE
    assert "too_many_headers" in parsed.defects


def test_leading_blank_lines_and_mbox_from_line() -> None:
    parsed = parse_mail(b"\r\n\r\nFrom cam@cam.lan Mon Jan  1 00:00:00 2024\r\nSubject: hello\r\n\r\nbody")
    assert (parsed.subject, parsed.body_text) == ("hello", "body")
    assert "leading_blank_lines" in parsed.defects


# --- dates, identity, event fallbacks -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected", "defect"),
    [
        ("Date: 21 Dec 2020 5:1:38", datetime(2020, 12, 21, 5, 1, 38), None),
        ("Date: Mon, 04 Jan 2021 10:11:12 +0800", datetime(2021, 1, 4, 10, 11, 12, tzinfo=timezone(timedelta(hours=8))),
         None),
        ("Date: 2021-01-04 10:11:12", datetime(2021, 1, 4, 10, 11, 12), None),
        ("Date: yesterday-ish", None, "bad_date"),
        ("Date: 32 Dec 2020 5:1:38", None, "bad_date"),
        ("X-No-Date: 1", None, "no_date"),
    ],
)
def test_date_header(header: str, expected: datetime | None, defect: str | None) -> None:
    parsed = parse_mail(message(f"Subject: Something odd\n{header}", b"body"))
    assert parsed.date == expected
    if expected is not None:
        assert (parsed.date.tzinfo is None) == (expected.tzinfo is None)
    assert parsed.event_time == expected  # no vendor time: falls back to Date
    if defect:
        assert defect in parsed.defects


def test_unknown_format_becomes_event_with_subject_as_type() -> None:
    raw = message("Subject:   Something   happened \nMessage-ID: <a@b>\nFrom: Cam <cam@cam.lan>", b"no details")
    parsed = parse_mail(raw)
    assert parsed.vendor is None
    assert parsed.event_type == "Something happened"
    assert parsed.message_id == "<a@b>"
    assert parsed.from_address == "cam@cam.lan"
    assert "no_message_id" not in parsed.defects
    empty = parse_mail(message("From: cam@cam.lan", b"words"))
    assert (empty.subject, empty.event_type) == ("", None)


# --- start / stop phase ------------------------------------------------------------------------


# Phase wording is tested in test_vendors.py, through parse_mail too.


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples_have_no_phase(name: str) -> None:
    assert parsed_sample(name).phase is None


def test_parsed_mail_positional_construction_keeps_working() -> None:
    args = ("s", None, None, None, None, "Motion", None, None, None, "", None, (), (), False, "NVR")
    parsed = ParsedMail(*args)
    assert (parsed.device_name, parsed.phase) == ("NVR", None)


# --- test mails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body", "with_image", "expected"),
    [
        ("Alarm from IPC", "If you receive this e-mail you have successfully set up and tested the "
         "e-mail alert from your IPC", False, True),
        ("Test mail", "This is a test mail from your device.", True, True),  # Hikvision
        ("IPC Message", "Test E-mail", False, True),  # Dahua
        ("test", "", False, True),
        ("", "testing 1 2 3", False, True),
        ("Person Detected by Test Camera at 2023/1/4 09:10:11", "", False, False),
        ("Motion detected", "Latest news", True, False),
        ("Motion on the contest stage", "", False, False),
    ],
)
def test_is_test(subject: str, body: str, with_image: bool, expected: bool) -> None:
    parts = [part("Content-Type: text/plain; charset=utf-8", body.encode())]
    if with_image:
        parts.append(part("Content-Type: image/jpeg\nContent-Transfer-Encoding: base64", base64_lines(jpeg())))
    raw = multipart(parts).replace(b"Subject: alarm", f"Subject: {subject}".encode())
    assert parse_mail(raw).is_test is expected


# --- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n", b"\x00\x01\x02\xff" * 100, b"no header here\r\n\r\nbody"])
def test_hopeless_input_raises_mail_parse_error(raw: bytes) -> None:
    with pytest.raises(MailParseError):
        parse_mail(raw)


def test_non_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_mail("Subject: x\r\n\r\n")  # type: ignore[arg-type]


def test_fuzzed_samples_never_raise_anything_else() -> None:
    rng = random.Random(20240207)
    originals = [p.read_bytes() for p in sorted(MAIL_DIR.glob("*.eml"))]
    parsed_count = 0
    for raw in originals:
        for _ in range(25):
            data = bytearray(raw[: rng.randrange(1, len(raw) + 1)])
            for _ in range(rng.randrange(0, 40)):
                pos = rng.randrange(len(data))
                data[pos : pos + rng.randrange(1, 4)] = rng.choice(
                    [b"\n", b"\r\n", b"--", b"=?", b"?=", b":", b";", b'"', b"\x00", b"\xff", b"begin 644 x\n"],
                )
            try:
                parsed = parse_mail(bytes(data))
            except MailParseError as exc:
                assert exc.__cause__ is None, "an unforeseen exception was wrapped"
                continue
            parsed_count += 1
            assert sum(len(a.data) for a in parsed.attachments) <= len(data)
            assert len(parsed.body_text) <= mailparse.MAX_BODY_TEXT
    assert parsed_count > 100
