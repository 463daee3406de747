"""Hostile mail through the real SMTP door: the alarm is kept, the bad part refused on its own, the daemon stays
healthy, and nothing is written outside data_dir."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import aiohttp
import pytest
from conftest import Daemon, sample
from PIL import Image

from vmond.ingest.mailparse import parse_mail
from vmond.store.events import list_events


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header promises 10 gigapixels; the data behind it is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def tiff() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 20, 20)).save(out, "TIFF")
    return out.getvalue()


def good_jpeg() -> bytes:
    return parse_mail(sample("nvr-fn3108xe-motion.eml")).images[0].data


def mail(subject: str, parts: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart mail with the given (content type, file name, data) attachments, all base64."""
    lines = [f"Subject: {subject}", "From: cam@cam.lan", "MIME-Version: 1.0",
             'Content-Type: multipart/mixed; boundary="XX"', "", "--XX", "Content-Type: text/plain", "", "alarm"]
    for content_type, name, data in parts:
        lines += ["--XX", f'Content-Type: {content_type}; name="{name}"',
                  f'Content-Disposition: attachment; filename="{name}"', "Content-Transfer-Encoding: base64", "",
                  base64.encodebytes(data).decode().rstrip("\n")]
    lines.append("--XX--")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def deliver_and_check(daemon: Daemon, raw: bytes, tmp_path: Path) -> dict:
    """Send *raw*; expect 250, one new event, a healthy daemon and no file outside data_dir."""
    data_dir = daemon.config.storage.data_dir
    outside_before = files_under(tmp_path) - files_under(data_dir)
    replies = await daemon.send(raw)
    assert replies["data"][0] == 250, replies
    await daemon.wait_idle(timeout=60)
    assert files_under(tmp_path) - files_under(data_dir) == outside_before
    status, health = await daemon.api("GET", "/api/health", None)
    assert status == 200 and health["status"] == "ok" and health["pipeline"]["failed"] == 0
    events = await daemon.services.db.read(list_events, "monitor.local", "all", 10, True)
    return events[0]


async def test_decompression_bomb_is_refused_and_the_good_picture_kept(daemon: Daemon, tmp_path: Path) -> None:
    raw = mail("Motion", [("image/png", "bomb.png", png_bomb()), ("image/jpeg", "ok.jpg", good_jpeg())])
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert "image_rejected" in event["flags"] and len(event["images"]) == 1
    assert event["images"][0]["width"] < 10_000


async def test_tiff_named_jpg_is_kept_opaque_not_decoded(daemon: Daemon, tmp_path: Path) -> None:
    event = await deliver_and_check(daemon, mail("Motion", [("image/jpeg", "snapshot.jpg", tiff())]), tmp_path)
    assert event["images"] == [] and "attachment_kept" in event["flags"]
    (kept,) = event["attachments"]
    assert kept["content_type"] == "image/tiff" and kept["name"] == "snapshot.jpg"


@pytest.mark.parametrize("name", ["../../../../etc/cron.d/evil.jpg", "a\0b.jpg", "..\\..\\boot.ini",
                                  "/var/lib/vmond/vmond.db", "\u202egpj.exe"])
async def test_file_names_from_the_mail_never_become_paths(daemon: Daemon, tmp_path: Path, name: str) -> None:
    raw = mail("Motion", [("image/jpeg", name, good_jpeg()), ("application/octet-stream", name, b"MZ" * 100)])
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert len(event["images"]) == 1
    (kept,) = event["attachments"]
    assert "/" not in (kept["name"] or "") and "\0" not in (kept["name"] or "")
    media_root = daemon.config.storage.data_dir / "media"
    for path in files_under(media_root):
        assert path.resolve().is_relative_to(media_root.resolve())
        assert "evil" not in path.name and "boot" not in path.name and "exe" not in path.name


async def test_ten_thousand_parts(daemon: Daemon, tmp_path: Path) -> None:
    parts = "".join(f"--XX\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(10_000))
    raw = (f"Subject: many parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
           f"{parts}--XX--\r\n").encode()
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert event["subject"] == "many parts"


async def test_thousand_deep_nesting(daemon: Daemon, tmp_path: Path) -> None:
    opening = "".join(f'--B{n}\r\nContent-Type: multipart/mixed; boundary="B{n + 1}"\r\n\r\n' for n in range(1000))
    raw = (f'Subject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B0"\r\n\r\n'
           f"{opening}--B1000\r\nContent-Type: text/plain\r\n\r\nbottom\r\n").encode()
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert event["subject"] == "deep"


async def test_two_megabyte_header(daemon: Daemon, tmp_path: Path) -> None:
    raw = (b"Subject: big header\r\nX-Junk: " + b"j" * 2_000_000 + b"\r\nFrom: cam@cam.lan\r\n\r\nbody\r\n")
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert event["subject"] == "big header"


async def test_script_in_subject_and_file_name_is_kept_as_text(daemon: Daemon, tmp_path: Path) -> None:
    subject = "<script>alert('x')</script>"
    raw = mail(subject, [("image/jpeg", "<img src=x onerror=alert(1)>.jpg", good_jpeg())])
    event = await deliver_and_check(daemon, raw, tmp_path)
    assert event["subject"] == subject and len(event["images"]) == 1
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, http.get(
        f"{daemon.url}/api/events/{event['id']}"
    ) as response:
        assert (await response.json())["subject"] == subject
