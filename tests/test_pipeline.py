"""The pipeline: spool replay at start-up, exactly-once after a crash, and bad input kept and flagged."""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import pickle
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from conftest import Daemon, distinct, sample
from helpers import wait_until
from mailmaker import dvr_mail

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest import pipeline as pipeline_module
from vmond.ingest.mailparse import parse_mail
from vmond.ingest.prepare import prepare_spooled
from vmond.ingest.spool import Spool, SpoolEnvelope
from vmond.media.store import MediaStore, stage_file
from vmond.store.events import list_events
from vmond.store.models import Media


def envelope(to: str = "camera-front@monitor.local") -> SpoolEnvelope:
    return SpoolEnvelope(received_at=datetime.now(UTC).isoformat(), peer="127.0.0.1:1234",
                         mail_from="cam@cam.lan", rcpt_tos=(to,))


async def all_events(daemon: Daemon) -> list[dict]:
    return await daemon.services.db.read(list_events, "monitor.local", "all", 100, True)


async def test_spool_left_by_a_crash_is_replayed_at_start(make_config: Callable[..., Config]) -> None:
    config = make_config()
    spool = Spool(config.storage.data_dir / "spool")
    spool.prepare()
    spool.store_sync(sample("amcrest-tamper.eml"), envelope())
    spool.store_sync(sample("swann-nvr-human.eml"), envelope("camera-back@monitor.local"))
    (spool.tmp / "half-written.msg").write_bytes(b"never acknowledged")
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.wait_idle()
        events = await all_events(daemon)
        assert sorted(e["camera"]["name"] for e in events) == ["Back Yard", "Front Door"]
        assert list(spool.tmp.iterdir()) == []


async def test_a_committed_spool_file_replayed_creates_nothing_twice(daemon: Daemon) -> None:
    spool = daemon.services.spool
    name = spool.store_sync(sample("hikvision-ipc-intrusion.eml"), envelope())
    saved = (spool.new / name).read_bytes()
    daemon.services.pipeline.notify()
    await daemon.wait_idle()
    # As if the power failed after the commit but before the file was deleted:
    (spool.new / name).write_bytes(saved)
    daemon.services.pipeline.notify()
    await daemon.wait_idle()
    events = await all_events(daemon)
    assert len(events) == 1 and len(events[0]["images"]) == 3
    assert await daemon.services.db.read(lambda: Media.select().count()) == 3


async def test_one_mail_to_two_cameras_makes_two_events(daemon: Daemon) -> None:
    spool = daemon.services.spool
    spool.store_sync(sample("swann-nvr-human.eml"),
                     SpoolEnvelope(received_at=datetime.now(UTC).isoformat(), peer="127.0.0.1:1",
                                   mail_from="nvr@cam.lan",
                                   rcpt_tos=("camera-front@monitor.local", "Camera-Back@MONITOR.local")))
    daemon.services.pipeline.notify()
    await daemon.wait_idle()
    events = await all_events(daemon)
    assert sorted(e["camera"]["name"] for e in events) == ["Back Yard", "Front Door"]
    assert all(len(e["images"]) == 1 for e in events)
    # The parser worker staged the picture once; each camera has its own file of it, the mail's own bytes.
    (picture,) = [a.data for a in parse_mail(sample("swann-nvr-human.eml")).attachments if a.is_image]
    media = daemon.services.media
    paths = await daemon.services.db.read(lambda: sorted(m.path for m in Media.select()))
    assert len(set(paths)) == 2
    assert [await asyncio.to_thread(media.resolve(p).read_bytes) for p in paths] == [picture, picture]
    assert list(media.staging.iterdir()) == []  # nothing left over


def test_a_worker_stages_the_pictures_and_sends_back_their_names(tmp_path: Path) -> None:
    """Only names and figures cross back from the parser worker: the pictures are in durable files it wrote."""
    raw = sample("swann-nvr-human.eml")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    name = spool.store_sync(raw, envelope())
    staging = tmp_path / "staging"
    staging.mkdir()
    prepared = prepare_spooled(str(spool.path(name)), False, str(staging))
    (image,) = prepared.images
    (picture,) = [a.data for a in parse_mail(raw).attachments if a.is_image]
    assert image.staged is not None and Path(image.staged).read_bytes() == picture
    assert image.size == len(picture) and image.attachment.data == b""
    assert prepared.parsed is not None and all(not a.data for a in prepared.parsed.attachments if a.is_image)
    assert len(pickle.dumps(prepared)) < len(picture) // 4
    # Without a staging folder it can use (gone, full), the pictures come back as before.
    fallback = prepare_spooled(str(spool.path(name)), False, str(tmp_path / "missing"))
    assert fallback.images[0].staged is None and fallback.images[0].attachment.data == picture


async def test_an_unparseable_mail_is_kept_raw_and_flagged(daemon: Daemon) -> None:
    raw = b"\x00\x01\x02 no header in sight\r\n\r\n\xff\xfe\r\n"
    assert (await daemon.send(raw))["data"][0] == 250
    await daemon.wait_idle()
    (event,) = await all_events(daemon)
    assert "unparsed" in event["flags"] and event["event_type"] == "Camera mail"
    (kept,) = event["attachments"]
    assert kept["kind"] == "raw" and kept["bytes"] == len(raw)
    await daemon.add_user()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {await daemon.token()}"}) as http:
        async with http.get(daemon.url + kept["url"]) as response:
            assert response.status == 200 and await response.read() == raw
            assert response.headers["Content-Disposition"].startswith("attachment;")
            assert response.content_type == "application/octet-stream"


def crash_the_worker(path: str, quick: bool = False, staging: str | None = None) -> None:
    os._exit(1)  # as a segfault in a decoder would


def hang_the_worker(path: str, quick: bool = False, staging: str | None = None) -> None:
    time.sleep(3600)


@pytest.mark.parametrize("failure", [crash_the_worker, hang_the_worker])
async def test_a_mail_that_kills_the_parser_is_kept_and_the_next_one_works(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch, failure: Callable[[str, bool, str | None], None]) -> None:
    monkeypatch.setattr(pipeline_module, "prepare_spooled", failure)
    monkeypatch.setattr(pipeline_module, "PARSE_TIMEOUT", 2.0)
    raw = sample("amcrest-tamper.eml")
    assert (await daemon.send(raw))["data"][0] == 250
    await daemon.wait_idle()
    (event,) = await all_events(daemon)
    assert "unparsed" in event["flags"] and event["attachments"][0]["kind"] == "raw"
    monkeypatch.undo()
    assert (await daemon.send(sample("swann-nvr-human.eml"), to="camera-back@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()
    events = {e["camera"]["name"]: e for e in await all_events(daemon)}
    assert events["Back Yard"]["event_type"] == "Human" and len(events["Back Yard"]["images"]) == 1
    assert daemon.services.pipeline._workers.restarts == 1


async def test_a_broken_picture_is_refused_alone(daemon: Daemon) -> None:
    good = sample("nvr-fn3108xe-motion.eml")
    broken = base64.encodebytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 40).decode()
    raw = (
        "Subject: Motion\r\nFrom: cam@cam.lan\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nmotion\r\n"
        '--b\r\nContent-Type: image/jpeg; name="a.jpg"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{broken}\r\n--b--\r\n"
    ).encode()
    assert (await daemon.send(raw))["data"][0] == 250
    assert (await daemon.send(good, to="camera-back@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()
    events = {e["camera"]["name"]: e for e in await all_events(daemon)}
    assert events["Front Door"]["flags"] == ["image_rejected"] and events["Front Door"]["images"] == []
    assert events["Back Yard"]["flags"] == [] and len(events["Back Yard"]["images"]) == 1


async def test_a_burst_from_one_camera_extends_one_event(make_config: Callable[..., Config]) -> None:
    config = make_config(events={"coalesce_window": "30s"})
    async with running(config) as services:
        daemon = Daemon(services)
        with services.bus.subscribe() as updates:
            for n in range(2):
                assert (await daemon.send(distinct(sample("amcrest-tamper.eml"), n)))["data"][0] == 250
                await daemon.wait_idle()
            (event,) = await all_events(daemon)
            assert event["mail_count"] == 2 and len(event["images"]) == 2
            types = [updates._queue.get_nowait().type for _ in range(2)]
            assert types == ["event.created", "event.updated"]


async def test_a_recorders_channels_are_events_of_their_own(make_config: Callable[..., Config]) -> None:
    # A recorder mails for all its cameras from one address: within the window, a mail of the same channel
    # extends that channel's event; another channel's mail is another camera's alarm, an event of its own.
    config = make_config(events={"coalesce_window": "30s"})
    async with running(config) as services:
        daemon = Daemon(services)
        for mail in (dvr_mail("CAM 2 Garage", "A2", 2, tag="1"), dvr_mail("CAM 3 Gate", "A3", 3),
                     dvr_mail("CAM 2 Garage", "A2", 2, tag="2"), sample("amcrest-tamper.eml")):
            assert (await daemon.send(mail))["data"][0] == 250
            await daemon.wait_idle()
        events = await all_events(daemon)
        assert [(e["camera_name"], e["channel"], e["mail_count"]) for e in events] == [
            ("AMC00056_24AAF8", "1", 1), ("CAM 3 Gate", "3", 1), ("CAM 2 Garage", "2", 2)]
        assert {e["camera"]["name"] for e in events} == {"Front Door"}


async def test_start_and_stop_mails_make_one_event(make_config: Callable[..., Config]) -> None:
    # Dahua EZIP-style: "Motion Detection Start", then minutes later "... Stop"; longer than the burst window.
    config = make_config(events={"coalesce_window": "0s"})

    def ezip(action: str) -> bytes:
        return (f"Subject: Motion Detection {action}\r\nFrom: cam@cam.lan\r\n\r\n"
                f"Alarm Event: Motion Detection {action}\r\nAlarm Input Channel: 1\r\n").encode()

    async with running(config) as services:
        daemon = Daemon(services)
        for action in ("Start", "Stop"):
            assert (await daemon.send(ezip(action)))["data"][0] == 250
            await daemon.wait_idle()
        assert (await daemon.send(ezip("Start"), to="camera-back@monitor.local"))["data"][0] == 250
        await daemon.wait_idle()
        events = {e["camera"]["name"]: e for e in await all_events(daemon)}
        assert len(events) == 2
        front = events["Front Door"]
        assert front["event_type"] == "Motion Detection" and front["mail_count"] == 2


async def test_a_cameras_resend_is_noted_not_raised_twice(daemon: Daemon) -> None:
    # The camera did not see our 250 (it timed out, or the power went) and sends the very same mail again.
    raw = sample("hikvision-ipc-intrusion.eml")
    for _ in range(2):
        assert (await daemon.send(raw))["data"][0] == 250
        await daemon.wait_idle()
    assert (await daemon.send(raw, to="camera-back@monitor.local"))["data"][0] == 250  # another camera: an alarm
    await daemon.wait_idle()
    events = {e["camera"]["name"]: e for e in await all_events(daemon)}
    assert len(events) == 2
    front = events["Front Door"]
    assert "retried" in front["flags"] and len(front["images"]) == 3 and front["mail_count"] == 1
    assert "retried" not in events["Back Yard"]["flags"]


async def test_a_backlog_is_parsed_ahead_in_order_and_a_resend_in_it_is_still_noticed(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(events={"coalesce_window": "0s"})
    spool = Spool(config.storage.data_dir / "spool")
    spool.prepare()
    backlog = [("amcrest-tamper.eml", "camera-front@monitor.local"),
               ("swann-nvr-human.eml", "camera-back@monitor.local"),
               ("amcrest-tamper.eml", "camera-front@monitor.local"),  # the same mail again: the camera's resend
               ("nvr-fn3108xe-motion.eml", "camera-front@monitor.local")]
    names = [spool.store_sync(sample(mail), envelope(to)) for mail, to in backlog]
    steps: list[tuple[str, str]] = []
    loaded = {name: threading.Event() for name in names}
    load, build = Spool.load, pipeline_module.build_records

    def recorded_load(self: Spool, name: str):  # noqa: ANN202 - the wrapped method's own type
        steps.append(("load", name))
        loaded[name].set()
        return load(self, name)

    def slow_build(entry, *args):  # noqa: ANN001, ANN202 - passed through as is
        steps.append(("store", entry.name))
        # Storing takes until the next mail is loaded, as a slow disk would: a pipeline that parses ahead loads it
        # meanwhile; one that does not leaves this wait to run out, and the order checked below is wrong.
        following = names[names.index(entry.name) + 1:]
        if following:
            loaded[following[0]].wait(timeout=5)
        steps.append(("stored", entry.name))
        return build(entry, *args)

    monkeypatch.setattr(Spool, "load", recorded_load)
    monkeypatch.setattr(pipeline_module, "build_records", slow_build)
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.wait_idle(timeout=30)
        events = sorted(await all_events(daemon), key=lambda e: e["id"])
    assert [(e["camera"]["name"], e["event_type"]) for e in events] == [
        ("Front Door", "Tamper Detect"), ("Back Yard", "Human"), ("Front Door", "motion alarm")]
    assert "retried" in events[0]["flags"] and events[0]["mail_count"] == 1
    for current, following in zip(names[:2], names[1:3], strict=True):
        assert steps.index(("load", following)) < steps.index(("stored", current))
    assert ("store", names[2]) not in steps  # the resend stores nothing
    assert [name for step, name in steps if step == "load"] == names
    assert list(spool.new.iterdir()) == []


async def test_pictures_staged_for_a_mail_that_never_got_them_are_removed(make_config: Callable[..., Config]) -> None:
    """A worker killed after staging, or a daemon killed before installing: the leftovers go at the next start,
    and when the pipeline has drained the spool."""
    config = make_config()
    staging = config.storage.data_dir / "media-staging"
    staging.mkdir(parents=True)
    (staging / "from-before-a-crash.part").write_bytes(b"\xff\xd8\xff" * 100)
    async with running(config) as services:
        daemon = Daemon(services)
        assert list(staging.iterdir()) == []
        (staging / "from-a-dead-worker.part").write_bytes(b"\xff\xd8\xff" * 100)
        assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
        await daemon.wait_idle()
        await wait_until(lambda: list(staging.iterdir()) == [], what="the leftover removed after the drain")


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.EPERM])
def test_a_staged_picture_is_copied_where_hard_links_cannot_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     refusal: int) -> None:
    """Media on another file system, or on one without hard links (FAT): the staged picture is copied instead."""
    media = MediaStore(tmp_path / "media")
    media.prepare()
    staged = stage_file(str(media.staging), b"\xff\xd8\xff picture")

    def no_link(*args: object) -> None:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "link", no_link)
    for camera in ("front", "back"):
        media.install_staged(staged, f"2026/12/07/mail-{camera}-0.jpg")
        assert media.resolve(f"2026/12/07/mail-{camera}-0.jpg").read_bytes() == b"\xff\xd8\xff picture"
