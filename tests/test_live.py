"""Snapshots and live view against a real RTSP camera (GStreamer's RTSP server, tests/rtsp_server.py): pictures of
the right size, one RTSP session for many askers, the stream limit, streams that end when nobody watches, clear
failures (dead port, silence, wrong password, no decoder) within the daemon's own limits, and no password in any
answer or log."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from conftest import Daemon, media_counted, media_on_disk, sample
from helpers import free_port, wait_until
from PIL import Image
from rtsp_server import RtspCamera

from vmond.config import Config
from vmond.daemon import running
from vmond.live import grab
from vmond.live.hub import LIMITS, SNAPSHOT_TTL
from vmond.media.avcompat import luma_extremes
from vmond.web import live as routes

pytestmark = pytest.mark.slow

CAM_USER = "viewer-7q"
CAM_PASSWORD = "Zq7-Live-Secret"
WRONG_PASSWORD = "Wrong-Pass-4711"
BOUNDARY = b"--" + routes.BOUNDARY.encode()


@pytest.fixture(scope="module")
def camera() -> Iterator[RtspCamera]:
    server = RtspCamera(CAM_USER, CAM_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a camera hung in its RTSP server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def camera_list(camera: RtspCamera, silent: int) -> list[dict[str, Any]]:
    def cam(name: str, url: str | None) -> dict[str, Any]:
        return {"name": name, "smtp_address": name.lower().replace(" ", "-"), "rtsp_url": url}

    return [
        cam("Front", camera.url()),
        cam("Back", camera.url()),
        cam("Garage", camera.url()),
        cam("Wrong Password", camera.url(password=WRONG_PASSWORD)),
        cam("Dead", f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{free_port()}/stream"),
        cam("Silent", f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{silent}/stream"),
        cam("No Codec", camera.url("/nocodec")),
        cam("Slow Gop", camera.url("/slowgop")),
        cam("No Url", None),
    ]


class LiveDaemon(Daemon):
    bearer = ""  # a guard's token
    cameras: dict[str, int] = {}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {self.bearer}"}
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}{path}", headers=headers, **kwargs) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, body, dict(r.headers)


@pytest.fixture
def live_config(make_config: Callable[..., Config], camera: RtspCamera, silent_port: int) -> Callable[..., Config]:
    def make(**live: Any) -> Config:
        return make_config(live=live, accounts=[{"name": "Verify Ltd", "cameras": camera_list(camera, silent_port)}])

    return make


@contextlib.asynccontextmanager
async def start(config: Config) -> AsyncIterator[LiveDaemon]:
    async with running(config) as services:
        daemon = LiveDaemon(services)
        await daemon.add_user("admin", "admin")
        await daemon.add_user("guard1", "guard")
        daemon.bearer = await daemon.token("guard1")
        admin = await daemon.token("admin")
        _, body = await daemon.api("GET", "/api/cameras", admin)
        daemon.cameras = {c["name"]: c["id"] for c in body["cameras"]}
        yield daemon


@pytest.fixture
async def live(live_config: Callable[..., Config]) -> AsyncIterator[LiveDaemon]:
    async with start(live_config()) as daemon:
        yield daemon


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        image.load()
        return image.size


async def read_parts(response: aiohttp.ClientResponse, count: int, timeout: float = 15.0
                     ) -> list[tuple[str, bytes]]:
    """The first *count* parts of a multipart/x-mixed-replace stream as (content type, body)."""
    parts: list[tuple[str, bytes]] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    while len(parts) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            headers = dict(line.split(": ", 1) for line in buffer[:end].decode().split("\r\n")[1:] if ": " in line)
            length = int(headers["Content-Length"])
            if len(buffer) >= end + 4 + length:
                parts.append((headers["Content-Type"], buffer[end + 4:end + 4 + length]))
                buffer = buffer[end + 4 + length + 2:]
                continue
        chunk = await asyncio.wait_for(response.content.read(65536), max(0.1, deadline - time.monotonic()))
        if not chunk:
            break
        buffer += chunk
    return parts


def no_secrets(*texts: object) -> None:
    for text in texts:
        flat = text.decode("latin-1") if isinstance(text, bytes) else str(text)
        assert CAM_PASSWORD not in flat and WRONG_PASSWORD not in flat, flat[:500]


# --- snapshots ----------------------------------------------------------------------------------------------------


async def test_snapshot_is_a_jpeg_of_the_stream(live: LiveDaemon, camera: RtspCamera) -> None:
    status, body, headers = await live.get(f"/api/cameras/{live.cameras['Front']}/snapshot")
    assert status == 200, body
    assert headers["Content-Type"] == "image/jpeg"
    assert jpeg_size(body) == (640, 360)  # the camera's size: below the 1280 snapshots are scaled to
    assert "X-Taken-At" in headers


def test_snapshots_are_scaled_down_to_the_width_asked(camera: RtspCamera) -> None:
    picture = grab.snapshot(camera.url(), 320, 80, grab.Limits())
    assert (picture.width, picture.height) == (320, 180) == jpeg_size(picture.jpeg)


async def test_askers_within_a_second_share_one_rtsp_session(live: LiveDaemon, camera: RtspCamera) -> None:
    before = camera.count("client-connected")
    camera_id = live.cameras["Back"]
    first, second = await asyncio.gather(*(live.get(f"/api/cameras/{camera_id}/snapshot") for _ in range(2)))
    third = await live.get(f"/api/cameras/{camera_id}/snapshot")
    assert first[0] == second[0] == third[0] == 200
    assert first[1] == second[1] == third[1]  # the same picture: from the cache
    assert live.services.live is not None and live.services.live.counters.snapshot_grabs == 1
    # The camera saw one session: a connection of the test's own, made after the answers, is the next it sees.
    await asyncio.to_thread(lambda: socket.create_connection(("127.0.0.1", camera.port), timeout=5).close())
    assert camera.wait_for(lambda: camera.count("client-connected") >= before + 2, 5)
    assert camera.count("client-connected") == before + 2
    await asyncio.sleep(SNAPSHOT_TTL + 0.2)  # past the cache's time: a new picture
    assert (await live.get(f"/api/cameras/{camera_id}/snapshot"))[0] == 200
    assert live.services.live.counters.snapshot_grabs == 2


@pytest.mark.parametrize(("name", "status", "words"), [
    ("Dead", 502, "connection refused"),
    ("Silent", 504, "no answer from the camera"),
    ("Wrong Password", 502, "authorization failed"),
    ("No Codec", 502, "unsupported stream"),
])
async def test_snapshot_failures_say_why_within_a_bound(live: LiveDaemon, caplog: pytest.LogCaptureFixture,
                                                        name: str, status: int, words: str) -> None:
    caplog.set_level(logging.INFO)
    async with asyncio.timeout(LIMITS.deadline):  # the daemon's own bound for a snapshot
        answer = await live.get(f"/api/cameras/{live.cameras[name]}/snapshot")
    assert answer[0] == status
    assert words in answer[1]["error"]  # the camera's own failure, not a worker killed at the pool's timeout
    no_secrets(answer[1], answer[2], caplog.text)
    _, body, _ = await live.get("/api/live")
    assert any(words in e["error"] for e in body["errors"])


async def test_a_camera_without_rtsp_url_or_unknown(live: LiveDaemon) -> None:
    status, body, _ = await live.get(f"/api/cameras/{live.cameras['No Url']}/snapshot")
    assert status == 409 and "no RTSP URL" in body["error"]
    assert (await live.get(f"/api/cameras/{live.cameras['No Url']}/live"))[0] == 409
    assert (await live.get("/api/cameras/9999/snapshot"))[0] == 404


async def test_live_routes_need_a_signed_in_user(live: LiveDaemon) -> None:
    for path in (f"/api/cameras/{live.cameras['Front']}/snapshot", f"/api/cameras/{live.cameras['Front']}/live",
                 "/api/live", "/api/alarms/1/snapshot"):
        status, _ = await live.api("GET", path, None)
        assert status == 401, path


def test_pictures_split_over_two_packets_are_put_together(camera: RtspCamera) -> None:
    container = grab.open_stream(camera.url("/split"), grab.Limits())
    try:
        stream = grab.video_stream(container)
        frames = grab.pictures(container, stream, interval=0, limits=grab.Limits(), first_by=time.monotonic() + 10)
        for _ in range(3):
            low, _high = luma_extremes(next(frames))
            assert low > 8  # a half-decoded keyframe has rows of 0 where its missing slices would be
    finally:
        grab.close(container)


# --- live streams -------------------------------------------------------------------------------------------------


async def test_live_stream_shows_changing_pictures_and_ends_when_left(live: LiveDaemon, camera: RtspCamera,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    hub = live.services.live
    assert hub is not None
    before = camera.count("client-connected")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {live.bearer}"}) as http:
        async with http.get(f"{live.url}/api/cameras/{live.cameras['Front']}/live") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            # About a picture a second (a keyframe a second), the first one at once: four well within 8 s.
            parts = await read_parts(response, 4, timeout=8)
            assert [t for t, _ in parts] == ["image/jpeg"] * 4
            assert {jpeg_size(body) for _, body in parts} == {(640, 360)}
            assert len({body for _, body in parts}) == 4  # the ball moves: every picture differs
            assert hub.open_streams == 1 and camera.open_clients >= 1
            status = (await live.get("/api/live"))[1]
            assert status["streams"][0]["viewers"] == 1 and status["streams"][0]["state"] == "streaming"
    # The viewer left: the stream ends after the grace period and the camera sees the session go.
    await wait_until(lambda: hub.open_streams == 0, timeout=8)
    assert camera.wait_for(lambda: camera.count("client-closed") >= before + 1, 5)
    assert camera.count("teardown") >= 1  # closed politely: the camera frees the session at once
    no_secrets(caplog.text)


async def test_viewers_of_one_camera_share_one_session(live: LiveDaemon, camera: RtspCamera) -> None:
    before = camera.count("client-connected")
    camera_id = live.cameras["Garage"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {live.bearer}"}) as http:
        async with http.get(f"{live.url}/api/cameras/{camera_id}/live") as one, \
                http.get(f"{live.url}/api/cameras/{camera_id}/live") as two:
            first, second = await asyncio.gather(read_parts(one, 2), read_parts(two, 2))
            assert len(first) == len(second) == 2
            status = (await live.get("/api/live"))[1]
            assert [(s["camera_id"], s["viewers"]) for s in status["streams"]] == [(camera_id, 2)]
    assert camera.count("client-connected") == before + 1


async def test_at_most_max_streams_cameras_stream_at_once(live: LiveDaemon, camera: RtspCamera) -> None:
    hub = live.services.live
    assert hub is not None and hub.max_streams == 2
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {live.bearer}"}) as http:
        async with http.get(f"{live.url}/api/cameras/{live.cameras['Front']}/live") as one, \
                http.get(f"{live.url}/api/cameras/{live.cameras['Back']}/live") as two:
            assert one.status == two.status == 200
            await asyncio.gather(read_parts(one, 1), read_parts(two, 1))
            # No waiting for a place: the answer comes while both streams are still being watched.
            async with asyncio.timeout(LIMITS.deadline):
                status, body, _ = await live.get(f"/api/cameras/{live.cameras['Garage']}/live")
            assert status == 503 and body["error"].startswith("busy")
            assert hub.open_streams == 2
    # Within the grace period the idle streams still exist; a new camera takes the place of one of them.
    await wait_until(lambda: hub.status()["streams"] and all(s["viewers"] == 0 for s in hub.status()["streams"]),
                     timeout=3)
    assert hub.open_streams == 2
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {live.bearer}"}) as http:
        async with http.get(f"{live.url}/api/cameras/{live.cameras['Garage']}/live") as three:
            assert three.status == 200
            assert len(await read_parts(three, 1)) == 1
            assert hub.open_streams <= 2


@pytest.mark.parametrize(("name", "status", "words"), [
    ("Dead", 502, "connection refused"),
    ("Wrong Password", 502, "authorization failed"),
    ("No Codec", 502, "unsupported stream"),
    ("Silent", 504, "no answer from the camera"),
])
async def test_live_failures_are_answered_not_hung(live: LiveDaemon, name: str, status: int, words: str) -> None:
    async with asyncio.timeout(LIMITS.deadline):  # the daemon's own bound for a stream's first picture
        answer = await live.get(f"/api/cameras/{live.cameras[name]}/live")
    assert answer[0] == status and words in answer[1]["error"]
    no_secrets(answer[1])
    # Asked again at once: the same answer from memory, no second reader.
    hub = live.services.live
    assert hub is not None
    opened = hub.counters.streams_opened
    again = await live.get(f"/api/cameras/{live.cameras[name]}/live")
    assert again[0] == status and hub.counters.streams_opened == opened
    await wait_until(lambda: hub.open_streams == 0, timeout=5)


async def test_a_camera_with_rare_keyframes_still_shows_two_pictures_a_second(live: LiveDaemon) -> None:
    hub = live.services.live
    assert hub is not None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {live.bearer}"}) as http:
        async with http.get(f"{live.url}/api/cameras/{live.cameras['Slow Gop']}/live") as response:
            assert response.status == 200
            await read_parts(response, 1, timeout=10)  # the first keyframe (one every five seconds)
            # Every frame decoded, two shown a second: six in about three seconds. Keyframes alone would take 30.
            parts = await read_parts(response, 6, timeout=10)
            assert len(parts) == 6
            assert len({body for _, body in parts}) == 6


async def test_a_viewer_that_stops_reading_is_dropped(live: LiveDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "SEND_BUFFER", 4096)
    monkeypatch.setattr(routes, "DROP_AFTER", 1.0)
    hub = live.services.live
    assert hub is not None
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:  # a plain socket nobody reads from (asyncio's streams would read ahead)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window is agreed then
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", live.web_port))
        await loop.sock_sendall(sock, f"GET /api/cameras/{live.cameras['Front']}/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      f"Authorization: Bearer {live.bearer}\r\n\r\n".encode())
        # A few pictures fill the small buffers, then a second of nothing taken.
        await wait_until(lambda: hub.counters.viewers_dropped == 1, timeout=15)
        await wait_until(lambda: hub.open_streams == 0, timeout=10)


async def test_shutdown_ends_streams_promptly(live_config: Callable[..., Config], camera: RtspCamera) -> None:
    async with aiohttp.ClientSession() as http:
        async with start(live_config()) as daemon:
            response = await http.get(f"{daemon.url}/api/cameras/{daemon.cameras['Front']}/live",
                                      headers={"Authorization": f"Bearer {daemon.bearer}"})
            assert len(await read_parts(response, 1)) == 1
        # The daemon ended the stream itself, the reason its last part: the web server had no open stream left
        # to wait out its shutdown timeout for (that would have cut the stream off, reason and all).
        async with asyncio.timeout(30):
            rest = await response.content.read()
        response.close()
    assert rest.endswith(b'{"error": "the server is shutting down"}\r\n' + BOUNDARY + b"--\r\n"), rest[-200:]


# --- the picture at raising ---------------------------------------------------------------------------------------


async def raise_alarm(daemon: LiveDaemon, to: str) -> int:
    assert (await daemon.send(sample("hikvision-ipc-intrusion.eml"), to=to))["data"][0] == 250
    await daemon.wait_idle()
    _, events = await daemon.api("GET", "/api/events", daemon.bearer)
    status, alarm = await daemon.api("POST", f"/api/events/{events['events'][0]['id']}/alarm", daemon.bearer)
    assert status == 201
    return alarm["id"]


async def alarm_when(daemon: LiveDaemon, alarm_id: int, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(150):
        _, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", daemon.bearer)
        if done(alarm):
            return alarm
        await asyncio.sleep(0.1)
    raise AssertionError(f"alarm {alarm_id} never got there: {alarm.get('snapshot')}")


async def test_the_picture_at_raising_is_kept_with_the_alarm(live_config: Callable[..., Config],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with start(live_config(snapshot_on_alarm=True)) as daemon:
        hub = daemon.services.live
        assert hub is not None
        # Raising does not wait for the camera: with one that never answers, the alarm is raised and its picture
        # is still being taken.
        silent_id = await raise_alarm(daemon, "silent@monitor.local")
        assert silent_id in hub.pending_alarm_snapshots
        alarm_id = await raise_alarm(daemon, "front@monitor.local")
        alarm = await alarm_when(daemon, alarm_id, lambda a: a["snapshot"] is not None)
        snapshot = alarm["snapshot"]
        assert snapshot["state"] == "ready" and (snapshot["width"], snapshot["height"]) == (640, 360)
        assert "alarm.snapshot" in [entry["action"] for entry in alarm["audit"]]
        assert len(alarm["event"]["images"]) == 3  # the camera's own pictures only
        status, body, headers = await daemon.get(snapshot["url"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg_size(body) == (640, 360)
        page_status, page = await daemon.api("GET", f"/alarms/{alarm_id}", daemon.bearer)
        assert page_status == 200 and "At the moment of raising" in page
        services = daemon.services
        # the event's clip: the last media write
        await wait_until(lambda: services.clips is None or not services.clips.queued, timeout=60, what="the clip")
        assert await media_counted(services) == media_on_disk(services.media.root)  # the picture is counted too
        # A camera that fails leaves the reason on the alarm instead.
        failed_id = await raise_alarm(daemon, "wrong-password@monitor.local")
        failed = await alarm_when(daemon, failed_id, lambda a: a["snapshot"] is not None)
        assert failed["snapshot"]["state"] == "failed" and "authorization failed" in failed["snapshot"]["error"]
        silent = await alarm_when(daemon, silent_id, lambda a: a["snapshot"] is not None)
        assert silent["snapshot"]["state"] == "failed" and "no answer" in silent["snapshot"]["error"]
        for path in (f"/api/alarms/{alarm_id}", f"/api/alarms/{failed_id}", f"/alarms/{failed_id}", "/api/live"):
            no_secrets(await daemon.api("GET", path, daemon.bearer))
    no_secrets(caplog.text)


async def test_without_the_option_no_picture_is_taken(live: LiveDaemon) -> None:
    hub = live.services.live
    assert hub is not None
    alarm_id = await raise_alarm(live, "front@monitor.local")
    # A picture at raising is pending from the moment of raising until it is kept: once none is, all is said.
    await wait_until(lambda: not hub.pending_alarm_snapshots, timeout=30)
    _, alarm = await live.api("GET", f"/api/alarms/{alarm_id}", live.bearer)
    assert alarm["snapshot"] is None
    assert hub.counters.snapshot_grabs == 0


async def test_no_password_on_any_page_or_answer(live: LiveDaemon) -> None:
    admin = await live.token("admin")
    paths = ["/api/cameras", "/api/live", "/cameras"] + [f"/api/cameras/{i}" for i in live.cameras.values()] \
        + [f"/cameras/{i}" for i in live.cameras.values()]
    for path in paths:
        status, body = await live.api("GET", path, admin)
        assert status == 200, path
        no_secrets(body)
