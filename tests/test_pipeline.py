"""The pipeline: spool replay at start-up, exactly-once after a crash, and bad input kept and flagged."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from conftest import Daemon, sample

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest import pipeline as pipeline_module
from vmond.ingest.spool import Spool, SpoolEnvelope
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


async def test_an_unparseable_mail_is_kept_raw_and_flagged(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(raw: bytes) -> None:
        raise ValueError("parser bug")

    monkeypatch.setattr(pipeline_module, "parse_mail", explode)
    raw = sample("reolink-person.eml")
    assert (await daemon.send(raw))["data"][0] == 250
    await daemon.wait_idle()
    (event,) = await all_events(daemon)
    assert "unparsed" in event["flags"] and event["event_type"] == "Camera mail"
    raw_media = await daemon.services.db.read(
        lambda: [(m.kind, m.path) for m in Media.select().where(Media.event == event["id"])])
    assert len(raw_media) == 1 and raw_media[0][0] == "raw"
    assert daemon.services.media.resolve(raw_media[0][1]).read_bytes() == raw


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
            for name in ("amcrest-tamper.eml", "nvr-fn3108xe-motion.eml"):
                assert (await daemon.send(sample(name)))["data"][0] == 250
                await daemon.wait_idle()
            (event,) = await all_events(daemon)
            assert event["mail_count"] == 2 and len(event["images"]) == 2
            types = [updates._queue.get_nowait().type for _ in range(2)]
            assert types == ["event.created", "event.updated"]
