"""Clips in the running daemon: made from an event's pictures, remade when a burst adds more, taken from the
camera's own MP4 when it plays, and a crashing encoder costs one clip only."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import av
import pytest
from conftest import Daemon, distinct, sample
from helpers import wait_until

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest.mailparse import parse_mail
from vmond.media import clips as clips_module
from vmond.media.video import encode_clip
from vmond.store.events import get_event

pytestmark = pytest.mark.slow


async def wait_for_video(daemon: Daemon, event_id: int, timeout: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        event = await daemon.services.db.read(get_event, "monitor.local", event_id)
        if event["video"]["state"] in ("ready", "failed") and not daemon.services.clips.queued:
            return event
        assert asyncio.get_running_loop().time() < deadline, event["video"]
        await asyncio.sleep(0.05)


async def fetch(daemon: Daemon, url: str) -> bytes:
    """The clip as a guard's browser gets it."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {await daemon.token()}"}) as http:
        async with http.get(daemon.url + url) as response:
            assert response.status == 200 and response.content_type == "video/mp4"
            return await response.read()


def frames_of(data: bytes) -> tuple[int, str, str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt


def x264_options(data: bytes) -> dict[str, str]:
    """The settings libx264 writes into its stream (an SEI message): ``options: cabac=0 ref=1 ...``."""
    start = data.index(b"x264 - core")
    text = data[start:data.index(b"\x00", start)].decode()
    return dict(item.split("=", 1) for item in text.split(" - options: ")[1].split() if "=" in item)


@pytest.fixture
def bursts(make_config: Callable[..., Config]) -> Config:
    return make_config(events={"coalesce_window": "30s"})


async def test_a_clip_is_made_and_remade_as_the_burst_grows(bursts: Config) -> None:
    async with running(bursts) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        with services.bus.subscribe() as live:
            assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
            await daemon.wait_idle()
            event_id = 1
            event = await wait_for_video(daemon, event_id)
            assert event["video"]["state"] == "ready" and event["video"]["url"]
            states = [m.data["video"]["state"] for m in list(live._queue._queue) if hasattr(m, "data")]
            assert states[:3] == ["none", "pending", "ready"]  # created, then the clip's two steps
        first_url = event["video"]["url"]
        assert frames_of(await fetch(daemon, first_url)) == (3, "h264", "yuv420p")
        first_file = next(services.media.root.rglob("event-*-clip-3.mp4"))

        burst = distinct(sample("hikvision-ipc-intrusion.eml"), 2)  # the next mail of the burst
        assert (await daemon.send(burst))["data"][0] == 250
        await daemon.wait_idle()
        event = await wait_for_video(daemon, event_id)
        assert len(event["images"]) == 6 and event["video"]["url"] != first_url
        assert frames_of(await fetch(daemon, event["video"]["url"]))[0] == 6
        assert not first_file.exists()  # the shorter clip is gone
        status, health = await daemon.api("GET", "/api/health", None)
        assert health["clips"]["made"] == 2 and health["clips"]["failed"] == 0


async def test_the_clip_a_guard_waits_for_is_encoded_for_speed(daemon: Daemon) -> None:
    await daemon.add_user()
    assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
    await daemon.wait_idle()
    event = await wait_for_video(daemon, 1)
    options = x264_options(await fetch(daemon, event["video"]["url"]))
    # ultrafast's signature: no CABAC, full-pixel motion search only, no B-frames (veryfast has all three)
    assert (options["cabac"], options["subme"], options["bframes"]) == ("0", "0", "0"), options


async def test_a_quiet_events_quick_clip_is_replaced_by_a_smaller_final_one(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_module, "QUIET_FLOOR", 0.5)
    async with running(make_config(events={"coalesce_window": "0s"})) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        with services.bus.subscribe() as live:
            assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
            await daemon.wait_idle()
            quick = await wait_for_video(daemon, 1)
            quick_clip = await fetch(daemon, quick["video"]["url"])
            assert x264_options(quick_clip)["subme"] == "0"  # ultrafast first
            quick_file = next(services.media.root.rglob("event-1-clip-3.mp4"))
            deadline = asyncio.get_running_loop().time() + 60
            while services.clips.refined < 1:
                assert asyncio.get_running_loop().time() < deadline, "the quick clip was never refined"
                await asyncio.sleep(0.05)
            final = await services.db.read(get_event, "monitor.local", 1)
            states = [m.data["video"]["state"] for m in list(live._queue._queue) if hasattr(m, "data")]
        assert final["video"]["state"] == "ready" and final["video"]["url"] != quick["video"]["url"]
        final_clip = await fetch(daemon, final["video"]["url"])
        options = x264_options(final_clip)
        assert (options["cabac"], options["subme"]) == ("1", "2"), options  # veryfast, the encoder's default
        assert frames_of(final_clip)[0] == 3 and len(final_clip) < len(quick_clip)
        assert not quick_file.exists()  # the quick clip's file is gone with its row
        assert states == ["none", "pending", "ready", "ready"]  # never back to pending: the event kept a clip


async def test_refinements_that_pile_up_are_all_made(make_config: Callable[..., Config],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_module, "QUIET_FLOOR", 1.0)
    async with running(make_config()) as services:
        daemon, clips = Daemon(services), services.clips
        for n in range(2):
            assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), n)))["data"][0] == 250
            await daemon.wait_idle()
            await wait_for_video(daemon, n + 1)
        held = True
        clips.wait_while = lambda: held  # the third event's clip gives way, as to a busy pipeline ...
        assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), 2)))["data"][0] == 250
        await daemon.wait_idle()
        # ... while the first two events turn quiet: both refinements wait in the queue at once.
        await wait_until(lambda: clips.queued == 3, timeout=30, what="two refinements queued behind a clip")
        held = False
        await wait_until(lambda: clips.refined == 2 and not clips.queued, timeout=60, what="both refinements")
        assert (await wait_for_video(daemon, 3))["video"]["state"] == "ready"


def crash(*args: object) -> None:
    os._exit(1)  # as a segfault in a codec would


async def test_a_crashing_encoder_costs_one_clip(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_module, "encode_files", crash)
    assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
    await daemon.wait_idle()
    event = await wait_for_video(daemon, 1)
    assert event["video"]["state"] == "failed" and "clip_failed" in event["flags"]
    assert len(event["images"]) == 3  # the pictures stay
    monkeypatch.undo()
    assert (await daemon.send(sample("hikvision-ipc-intrusion.eml"), to="camera-back@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()
    assert (await wait_for_video(daemon, 2))["video"]["state"] == "ready"


def mp4_mail(video: bytes) -> bytes:
    encoded = base64.encodebytes(video).decode()
    return ("Subject: Motion\r\nFrom: cam@cam.lan\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n'
            '--b\r\nContent-Type: video/mp4; name="clip.mp4"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{encoded}\r\n--b--\r\n").encode()


async def test_the_cameras_own_video_becomes_the_clip(daemon: Daemon, tmp_path: Path) -> None:
    await daemon.add_user()
    stills = [image.data for image in parse_mail(sample("hikvision-ipc-intrusion.eml")).images]
    encode_clip(stills, tmp_path / "camera.mp4", fps=2, max_width=640)
    assert (await daemon.send(mp4_mail((tmp_path / "camera.mp4").read_bytes())))["data"][0] == 250
    assert (await daemon.send(mp4_mail(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000)),
                              to="camera-back@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()
    good = await wait_for_video(daemon, 1)
    assert good["video"]["state"] == "ready" and good["attachments"] == []
    assert frames_of(await fetch(daemon, good["video"]["url"]))[0] == 3
    bad = await daemon.services.db.read(get_event, "monitor.local", 2)
    assert "video_rejected" in bad["flags"] and bad["video"]["state"] == "none"
    assert bad["attachments"][0]["content_type"] == "application/octet-stream"


async def test_a_flood_skips_clips_instead_of_queueing_them(make_config: Callable[..., Config],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_module, "QUEUE_SIZE", 1)
    async with running(make_config()) as services:
        daemon = Daemon(services)
        for n in range(6):
            assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), n)))["data"][0] == 250
        await daemon.wait_idle()
        for event_id in range(1, 7):
            await wait_for_video(daemon, event_id)
        assert services.clips.skipped >= 1
        events = [await services.db.read(get_event, "monitor.local", n) for n in range(1, 7)]
        skipped = [e for e in events if "clip_skipped" in e["flags"]]
        assert skipped and all(len(e["images"]) == 3 for e in events)
