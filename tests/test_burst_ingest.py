"""A burst: mails waiting in the spool reach the wall first, after a quick picture check, and are committed together;
their pictures are decoded and thumbnailed once the spool has drained (issue 20)."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Daemon, distinct, sample
from mailmaker import base64_lines, jpeg
from PIL import Image

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest import pipeline as pipeline_module
from vmond.ingest.prepare import prepare_spooled
from vmond.ingest.spool import Spool, SpoolEnvelope, read_message
from vmond.media.images import inspect_image
from vmond.store.events import IngestRecord, MediaRecord, list_events
from vmond.store.ingestbatch import MailRecords, ResendLost, record_mails
from vmond.store.models import Media
from vmond.util.bus import Message

CAMERAS = ("camera-front@monitor.local", "camera-back@monitor.local")


def envelope(to: str) -> SpoolEnvelope:
    return SpoolEnvelope(received_at=datetime.now(UTC).isoformat(), peer="127.0.0.1:1234",
                         mail_from="cam@cam.lan", rcpt_tos=(to,))


def spool_burst(config: Config, mails: list[bytes]) -> None:
    """Spool *mails* (to the two cameras in turn) before the daemon starts: the backlog a burst at the door leaves
    the pipeline, all of it there when it first looks."""
    spool = Spool(config.storage.data_dir / "spool")
    spool.prepare()
    for n, raw in enumerate(mails):
        spool.store_sync(raw, envelope(CAMERAS[n % 2]))


def announced(daemon: Daemon) -> list[Message]:
    """What the daemon announced since its start (the bus keeps it for reconnecting browsers)."""
    return list(daemon.services.bus._history)


def damaged_png() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(out, "PNG")
    data = bytearray(out.getvalue())
    data[data.index(b"IDAT") + 8] ^= 0xFF  # its end is intact; its image data fails the CRC
    return bytes(data)


def mail_with(pictures: list[tuple[str, bytes]]) -> bytes:
    parts = b"".join(
        b'--b\r\nContent-Type: ' + kind.encode() + b'; name="p' + str(n).encode() + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(data)
        for n, (kind, data) in enumerate(pictures))
    return (b"Subject: Motion\r\nFrom: cam@cam.lan\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nmotion\r\n" + parts + b"--b--\r\n")


@pytest.fixture
def burst_config(make_config: Callable[..., Config]) -> Config:
    return make_config(events={"coalesce_window": "0s"}, video={"enabled": False})


async def test_a_burst_reaches_the_wall_before_its_thumbnails(burst_config: Config) -> None:
    spool_burst(burst_config, [distinct(sample("hikvision-ipc-intrusion.eml"), n) for n in range(5)])
    async with running(burst_config) as services:
        daemon = Daemon(services)
        await daemon.wait_idle(timeout=30)
        messages = announced(daemon)
        await check_thumbnails(daemon)
    created = [m.data for m in messages if m.type == "event.created"]
    assert len(created) == 5 and all(len(event["images"]) == 3 for event in created)
    # Every mail but the last had others behind it: announced with the pictures themselves in the thumbnails'
    # place, then again once their thumbnails were made. The last one was announced with its thumbnails.
    first, last = created[:4], created[4]
    for event in first:
        assert [i["thumbnail_url"] for i in event["images"]] == [i["url"] for i in event["images"]]
        later = [m.data for m in messages if m.type == "event.updated" and m.data["id"] == event["id"]]
        assert later and all(i["thumbnail_url"] == i["url"] + "/thumbnail" for i in later[-1]["images"])
    assert all(i["thumbnail_url"] == i["url"] + "/thumbnail" for i in last["images"])


async def check_thumbnails(daemon: Daemon) -> None:
    """Every picture has its thumbnail, the one the full check makes, on disk where its row says."""
    media = daemon.services.media
    rows = await daemon.services.db.read(lambda: list(Media.select().where(Media.kind == "image")))
    assert len(rows) == 15 and all(row.thumb_path for row in rows)
    for row in rows:
        picture = await asyncio.to_thread(media.resolve(row.path).read_bytes)
        thumbnail = await asyncio.to_thread(media.resolve(row.thumb_path).read_bytes)
        assert thumbnail == inspect_image(picture).thumbnail


async def test_a_picture_the_full_check_refuses_after_the_commit_is_kept_and_flagged(burst_config: Config) -> None:
    png = damaged_png()
    spool_burst(burst_config, [mail_with([("image/jpeg", jpeg((64, 48))), ("image/png", png)]),
                               distinct(sample("swann-nvr-human.eml"), 1)])
    async with running(burst_config) as services:
        daemon = Daemon(services)
        await daemon.wait_idle(timeout=30)
        await check_refusal(daemon, announced(daemon), png)


async def check_refusal(daemon: Daemon, messages: list[Message], png: bytes) -> None:
    (event,) = [m.data for m in messages if m.type == "event.created" and m.data["camera"]["name"] == "Front Door"]
    assert len(event["images"]) == 2 and event["flags"] == []  # the quick check let both through
    updates = [m.data for m in messages if m.type == "event.updated" and m.data["id"] == event["id"]]
    final = updates[-1]
    assert final["flags"] == ["image_rejected"]
    (picture,) = final["images"]
    assert picture["width"] == 64 and picture["thumbnail_url"] == picture["url"] + "/thumbnail"
    # The refused picture is not lost: it is kept as it came, for download only.
    (kept,) = final["attachments"]
    assert kept["kind"] == "attachment" and kept["content_type"] == "image/png"
    stored = await daemon.services.db.read(lambda: Media.get_by_id(kept["id"]).path)
    assert await asyncio.to_thread(daemon.services.media.resolve(stored).read_bytes) == png
    events = await daemon.services.db.read(list_events, "monitor.local", "all", 10, True)
    assert {e["camera"]["name"]: e["flags"] for e in events} == {"Front Door": ["image_rejected"], "Back Yard": []}


def crash_on_the_marked_mail(path: str, quick: bool = False, staging: str | None = None) -> object:
    """The parse, except that the worker dies on a mail with the marker, as a segfault in a decoder would."""
    if b"KILL-THE-PARSER" in read_message(path):
        os._exit(1)
    return prepare_spooled(path, quick, staging)


async def test_a_worker_that_dies_in_a_burst_costs_that_mail_only(burst_config: Config,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "prepare_spooled", crash_on_the_marked_mail)
    mails = [distinct(sample("hikvision-ipc-intrusion.eml"), n) for n in range(5)]
    mails[2] = mails[2].replace(b"Subject: ", b"Subject: KILL-THE-PARSER ", 1)
    spool_burst(burst_config, mails)
    async with running(burst_config) as services:
        daemon = Daemon(services)
        await daemon.wait_idle(timeout=30)
        events = sorted(await services.db.read(list_events, "monitor.local", "all", 10, True), key=lambda e: e["id"])
        assert [("unparsed" in e["flags"], len(e["images"])) for e in events] == [
            (False, 3), (False, 3), (True, 0), (False, 3), (False, 3)]
        assert services.pipeline._workers.restarts == 1


async def test_pictures_a_crash_left_unfinished_are_finished_at_the_next_start(
        make_config: Callable[..., Config]) -> None:
    config = make_config(video={"enabled": False})
    async with running(config) as services:
        daemon = Daemon(services)
        assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
        await daemon.wait_idle()
        rows = await services.db.read(lambda: [(m.id, m.thumb_path) for m in Media.select()])
        # As a crash between the commit and the thumbnails leaves it: rows without, and no files.
        for _, thumb in rows:
            await asyncio.to_thread(services.media.delete_sync, thumb)
        await services.db.write(lambda: Media.update(thumb_path=None).execute())
    async with running(config) as services:
        await Daemon(services).wait_idle(timeout=30)
        again = await services.db.read(lambda: [(m.id, m.thumb_path) for m in Media.select()])
        assert again == rows
        assert all(services.media.resolve(thumb).is_file() for _, thumb in again)


def record(key: str, digest: str, pictures: int = 1) -> IngestRecord:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    media = tuple(MediaRecord(kind="image", path=f"{key}-{n}.jpg", content_type="image/jpeg", sha256="0" * 64,
                              bytes=10, width=4, height=3) for n in range(pictures))
    return IngestRecord(ingest_key=f"{key}:camera-front", local_part="camera-front", received_at=at, event_time=at,
                        event_type="Motion", subject="Motion", media=media, sha256=digest)


def mail(key: str, digest: str, stored: bool = True) -> list[MailRecords]:
    """A mail to the front camera; *stored*: staged as a new alarm (its picture on disk), else taken for a resend."""
    return [MailRecords("camera-front", digest, record(key, digest, pictures=0),
                        record(key, digest) if stored else None)]


async def test_a_resend_inside_one_batch_is_noted_on_the_first(tmp_path: Path, config: Config) -> None:
    from vmond.store.db import Database
    from vmond.store.sync import sync_accounts

    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        batch = [mail("a", "same"), mail("b", "other"), mail("c", "same", stored=False)]
        (a,), (b,), (c,) = await db.write(record_mails, "monitor.local", batch, 0.0)
        assert a.result.created and b.result.created and a.result.event["id"] != b.result.event["id"]
        # Found in the same transaction: noted on the first, not a new alarm.
        assert not c.result.created and c.result.event["id"] == a.result.event["id"] and c.record is None
        assert "retried" in c.result.event["flags"] and c.result.event["mail_count"] == 1
        # A mail taken for a resend whose original is not there is refused: the pipeline then records it alone.
        with pytest.raises(ResendLost):
            await db.write(record_mails, "monitor.local", [mail("e", "unknown", stored=False)], 0.0)
