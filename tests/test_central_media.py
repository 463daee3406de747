"""A central station's pictures (issue 18): thumbnails sent eagerly by the edge, full pictures fetched with a
``media`` command when someone opens them, served byte for byte as the edge has them, in a bounded cache."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from centralsite import Central, central, edge, poll  # noqa: F401 - fixtures
from conftest import Daemon, sample
from mosquitto import Mosquitto
from PIL import Image

from vmond.central.media import MAX_PAYLOAD
from vmond.mqtt.client import paho_client
from vmond.store.events import media_for_download
from vmond.store.models import Media, OutboxMessage, RemoteCommand
from vmond.store.retention import drop_media

pytestmark = pytest.mark.usefixtures("quick_mqtt")
MAIL = "hikvision-ipc-intrusion.eml"  # three pictures


@pytest.fixture
def edge_options() -> dict[str, Any]:
    return {"mqtt": {"publish_media": "thumbnails"}}


@pytest.fixture
def central_options() -> dict[str, Any]:
    return {"media_cache": 1 << 20}


def cache_dir(central: Central) -> Path:  # noqa: F811
    return central.directory / "data" / "media" / "central" / "test-site"


async def edge_pictures(edge: Daemon) -> list[tuple[int, bytes, bytes]]:  # noqa: F811
    """The edge's pictures of its (only) event: (media id, file, thumbnail), in the event's order."""
    token = await edge.token()
    _, body = await edge.api("GET", "/api/events", token)
    found = []
    for image in body["events"][0]["images"]:
        media = await edge.services.db.read(media_for_download, image["id"])
        store = edge.services.media
        found.append((image["id"], store.resolve(media["path"]).read_bytes(),
                      store.resolve(media["thumb_path"]).read_bytes()))
    return found


async def central_event(central: Central) -> dict[str, Any]:  # noqa: F811
    async def with_pictures() -> dict[str, Any] | None:
        events = await central.list("/api/events", "events")
        return events[0] if events and events[0]["images"] else None

    return await poll(with_pictures, "the edge's event with its pictures on the central")


async def media_commands(edge: Daemon) -> list[dict[str, Any]]:  # noqa: F811
    def read() -> list[dict[str, Any]]:
        results = [json.loads(row.result) for row in RemoteCommand.select()]
        return [result for result in results if result["action"] == "media"]

    return await edge.services.db.read(read)


async def test_thumbnails_arrive_eagerly_and_a_full_picture_is_fetched_when_opened(
        edge: Daemon, central: Central) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    event = await central_event(central)
    pictures = await edge_pictures(edge)
    assert len(pictures) == len(event["images"]) == 3
    cache = cache_dir(central)

    async def thumbnails_cached() -> bool:
        return all((cache / f"{edge_id}.thumb").is_file() for edge_id, _, _ in pictures)

    await poll(thumbnails_cached, "the thumbnails the edge sends eagerly, cached on the central")
    assert not any((cache / str(edge_id)).exists() for edge_id, _, _ in pictures)  # only thumbnails eagerly
    for image, (_, _, thumbnail) in zip(event["images"], pictures, strict=True):
        status, headers, body = await central.fetch(image["thumbnail_url"])
        assert status == 200 and body == thumbnail
        assert headers["Content-Type"] == "image/jpeg" and headers["X-Content-Type-Options"] == "nosniff"
    assert await media_commands(edge) == []  # served from the cache: the site was not asked

    # Two people open the same picture at once: one command, both get it.
    started = time.monotonic()
    first, second = await asyncio.gather(central.fetch(event["images"][1]["url"]),
                                         central.fetch(event["images"][1]["url"]))
    for status, headers, body in (first, second):
        assert status == 200, body
        assert body == pictures[1][1]
        assert headers["Content-Type"] == "image/jpeg" and headers["X-Content-Type-Options"] == "nosniff"
    assert time.monotonic() - started < 10
    commands = await media_commands(edge)
    assert len(commands) == 1 and commands[0]["ok"] is True
    # Cached now: served again without asking the site.
    status, _, again = await central.fetch(event["images"][1]["url"])
    assert status == 200 and again == pictures[1][1]
    assert len(await media_commands(edge)) == 1


async def test_opening_the_event_asks_for_all_its_pictures_in_one_command(
        edge: Daemon, central: Central) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    event = await central_event(central)
    pictures = await edge_pictures(edge)
    status, _, page = await central.fetch(f"/events/{event['id']}")
    assert status == 200 and b"data-site-event" in page
    cache = cache_dir(central)

    async def all_cached() -> bool:
        return all((cache / str(edge_id)).is_file() for edge_id, _, _ in pictures)

    await poll(all_cached, "the event's full pictures, asked for when it was opened")
    commands = await media_commands(edge)
    assert len(commands) == 1 and commands[0]["ok"] is True
    for image, (_, file, _) in zip(event["images"], pictures, strict=True):
        status, _, body = await central.fetch(image["url"])
        assert status == 200 and body == file
    # Opening it again asks for nothing more: everything is cached.
    assert (await central.fetch(f"/events/{event['id']}"))[0] == 200
    assert len(await media_commands(edge)) == 1


async def test_a_picture_the_edge_no_longer_has_answers_cleanly(edge: Daemon, central: Central) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    event = await central_event(central)
    pictures = await edge_pictures(edge)

    # The file went (a disk fault, or retention between the row and the file): the site cannot send it.
    def path_of(media_id: int) -> str:
        return str(Media.get_by_id(media_id).path)

    edge.services.media.resolve(await edge.services.db.read(path_of, pictures[0][0])).unlink()
    started = time.monotonic()
    status, headers, body = await central.fetch(event["images"][0]["url"])
    assert status == 504 and b"not available yet" in body, body
    assert headers.get("Retry-After") and 9 <= time.monotonic() - started < 20

    # Retention removed the event's media on the edge: the site refuses, and the central says so at once.
    edge_event_id = await edge.services.db.read(lambda: Media.get_by_id(pictures[1][0]).event_id)
    await edge.services.db.write(drop_media, [edge_event_id])
    started = time.monotonic()
    status, _, body = await central.fetch(event["images"][1]["url"])
    assert status == 404 and b"unknown media" in body, body
    assert time.monotonic() - started < 9
    # The wall still works: the thumbnails sent eagerly stay.
    status, _, _ = await central.fetch(event["images"][2]["thumbnail_url"])
    assert status == 200


def noisy_jpeg(seed: int, side: int = 540) -> bytes:
    """A picture that does not compress: about 300 KB as a JPEG."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "JPEG", quality=95)
    return out.getvalue()


def mail_with_pictures(pictures: list[bytes]) -> bytes:
    lines = ["Subject: Motion", "From: cam@cam.lan", "MIME-Version: 1.0",
             'Content-Type: multipart/mixed; boundary="XX"', "", "--XX", "Content-Type: text/plain", "", "alarm"]
    for n, data in enumerate(pictures):
        lines += ["--XX", f'Content-Type: image/jpeg; name="p{n}.jpg"', "Content-Transfer-Encoding: base64", "",
                  base64.encodebytes(data).decode().rstrip("\n")]
    lines.append("--XX--")
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_the_cache_bound_removes_the_least_recently_served(edge: Daemon, central: Central) -> None:  # noqa: F811
    files = [noisy_jpeg(n) for n in range(3)]
    assert all(300_000 < len(f) < 500_000 for f in files), [len(f) for f in files]
    await edge.send(mail_with_pictures(files))
    event = await central_event(central)
    pictures = await edge_pictures(edge)
    assert [file for _, file, _ in pictures] == files
    cache = cache_dir(central)
    a, b, c = (image["url"] for image in event["images"])
    (a_id, _, _), (b_id, _, _), (c_id, _, _) = pictures

    for url, expected in ((a, files[0]), (b, files[1]), (a, files[0])):  # a served again after b
        status, _, body = await central.fetch(url)
        assert status == 200 and body == expected
    assert (cache / str(a_id)).is_file() and (cache / str(b_id)).is_file()
    status, _, body = await central.fetch(c)  # now over 1 MB: b, the least recently served picture, goes
    assert status == 200 and body == files[2]

    async def b_evicted() -> bool:
        return not (cache / str(b_id)).exists()

    await poll(b_evicted, "the least recently served picture removed for central.media_cache")
    assert (cache / str(a_id)).is_file() and (cache / str(c_id)).is_file()
    total = sum(p.stat().st_size for p in cache.iterdir() if not p.name.startswith("."))
    assert total <= 1 << 20
    # Asked for again, it is fetched again from the site.
    commands = len(await media_commands(edge))
    status, _, body = await central.fetch(b)
    assert status == 200 and body == files[1]
    assert len(await media_commands(edge)) == commands + 1


async def test_thumbnails_sent_while_the_central_was_down_arrive_with_their_event(
        edge: Daemon, central: Central) -> None:  # noqa: F811
    """The broker keeps the central's session: on its return the event and its thumbnails come in one go, and
    the thumbnails are taken after their event (not dropped as unknown)."""
    await central.fetch("/api/sites")
    assert central.process.stop() == 0
    await edge.send(sample(MAIL))
    await edge.wait_idle()
    pictures = await edge_pictures(edge)

    async def edge_sent_all() -> bool:
        return edge.services.mqtt is not None and await edge.services.db.read(outbox_empty)

    await poll(edge_sent_all, "the edge's event and thumbnails handed to the broker")
    await asyncio.to_thread(central.process.start)
    event = await central_event(central)
    cache = cache_dir(central)

    async def thumbnails_cached() -> bool:
        return all((cache / f"{edge_id}.thumb").is_file() for edge_id, _, _ in pictures)

    await poll(thumbnails_cached, "the thumbnails, taken after their event")
    for image, (_, _, thumbnail) in zip(event["images"], pictures, strict=True):
        assert (await central.fetch(image["thumbnail_url"]))[2] == thumbnail
    assert await media_commands(edge) == []


def outbox_empty() -> bool:
    return not OutboxMessage.select().exists()


async def test_a_file_larger_than_the_hard_cap_is_dropped(edge: Daemon, central: Central,  # noqa: F811
                                                          broker: Mosquitto) -> None:
    await edge.send(sample(MAIL))
    event = await central_event(central)
    pictures = await edge_pictures(edge)
    topic = f"vmond/test-site/media/{pictures[0][0]}"
    await asyncio.to_thread(publish_once, broker.port, topic, b"\xff" * (MAX_PAYLOAD + 1))
    log = central.directory / "vmond.log"

    async def said() -> bool:
        return b"more than 33554432; dropped" in log.read_bytes()

    await poll(said, "the oversized file dropped")
    assert not (cache_dir(central) / str(pictures[0][0])).exists()
    status, _, body = await central.fetch(event["images"][0]["url"])  # asked for as usual, and sent
    assert status == 200 and body == pictures[0][1]


def publish_once(port: int, topic: str, payload: bytes) -> None:
    client = paho_client("test-oversized", clean_session=True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
