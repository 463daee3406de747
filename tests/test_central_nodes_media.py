"""A site's pictures on several central nodes (issue 19): every node keeps a media cache of its own and receives
every media message, so a thumbnail the site sends eagerly, and a picture one node asked for, are served by every
node, byte for byte as the site has them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from centralsite import Central, central_nodes, edge, poll  # noqa: F401 - fixtures
from conftest import Daemon, sample
from mosquitto import Mosquitto
from test_central_media import edge_pictures, media_commands

pytestmark = pytest.mark.usefixtures("quick_mqtt")
MAIL = "hikvision-ipc-intrusion.eml"  # three pictures
# A node's cache bound freeing its whole cache (argv: database URL, media directory, unused SQLite path, a file
# that must then be "not fetched" on its row).
FREE_ALL = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from vmond.central.mediacache import CacheBound
from vmond.media.store import MediaStore
from vmond.store.centralmedia import cached_paths
from vmond.store.db import Database

async def main():
    url, media, unused, relpath = sys.argv[1:]
    with ThreadPoolExecutor(1) as io:
        async with Database(Path(unused), url=url) as db:
            bound = CacheBound(db, MediaStore(Path(media)), io)
            await bound.free_to(0)
            assert bound.evicted > 0 and relpath not in await db.read(cached_paths)

asyncio.run(main())
"""


@pytest.fixture
def edge_options() -> dict[str, Any]:
    return {"mqtt": {"publish_media": "thumbnails"}}


@pytest.fixture
def nodes(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[list[Central]]:
    with central_nodes(tmp_path, broker.port, postgres_url) as nodes:
        yield nodes


def cache_dir(node: Central) -> Path:
    return node.directory / "data" / "media" / "central" / "test-site"


async def _event_on_every_node(nodes: list[Central]) -> list[dict[str, Any]]:
    found = []
    for node in nodes:
        async def with_pictures(node: Central = node) -> dict[str, Any] | None:
            events = await node.list("/api/events", "events")
            return events[0] if events and events[0]["images"] else None

        found.append(await poll(with_pictures, "the site's event with its pictures on a node"))
    assert len({event["id"] for event in found}) == 1  # one row in the shared database
    return found


async def test_every_node_serves_the_eager_thumbnails_and_a_picture_another_node_fetched(
        edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    events = await _event_on_every_node(nodes)
    pictures = await edge_pictures(edge)
    assert len(pictures) == len(events[0]["images"]) == 3

    # The thumbnails the site publishes eagerly land in every node's own cache, and every node serves them.
    for node in nodes:
        async def thumbnails_cached(node: Central = node) -> bool:
            return all((cache_dir(node) / f"{edge_id}.thumb").is_file() for edge_id, _, _ in pictures)

        await poll(thumbnails_cached, f"the eager thumbnails in the cache of node {node.directory.name}")
    for node, event in zip(nodes, events, strict=True):
        for image, (_, _, thumbnail) in zip(event["images"], pictures, strict=True):
            status, headers, body = await node.fetch(image["thumbnail_url"])
            assert status == 200, body
            assert body == thumbnail and headers["Content-Type"] == "image/jpeg"
    assert await media_commands(edge) == []  # from the caches: the site was not asked

    # Each picture opened on node A: A waits for the site's answer and serves it, whichever node the broker
    # would have handed it to; node B received the same answer and serves it from its own cache, unasked.
    a, b = nodes
    for image, (_, picture, _) in zip(events[0]["images"], pictures, strict=True):
        status, _, body = await a.fetch(image["url"])
        assert status == 200, body
        assert body == picture
    assert len(await media_commands(edge)) == len(pictures)
    for image, (edge_id, picture, _) in zip(events[1]["images"], pictures, strict=True):
        async def on_b(edge_id: int = edge_id) -> bool:
            return (cache_dir(b) / str(edge_id)).is_file()

        await poll(on_b, "node A's picture in node B's cache too")
        status, _, body = await b.fetch(image["url"])
        assert status == 200, body
        assert body == picture
    assert len(await media_commands(edge)) == len(pictures)  # node B asked for none


async def test_a_picture_opened_on_both_nodes_at_once_is_served_by_both(
        edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    events = await _event_on_every_node(nodes)
    pictures = await edge_pictures(edge)
    # Both nodes ask the site at once (neither has it yet); each answer reaches both: duplicates change nothing.
    for index in range(len(pictures)):
        answers = await asyncio.gather(*(node.fetch(event["images"][index]["url"])
                                         for node, event in zip(nodes, events, strict=True)))
        for status, _, body in answers:
            assert status == 200, body
            assert body == pictures[index][1]
    for node in nodes:
        assert all((cache_dir(node) / str(edge_id)).read_bytes() == picture for edge_id, picture, _ in pictures)


async def test_one_nodes_cache_bound_leaves_the_other_node_serving_its_own_copy(
        tmp_path: Path, postgres_url: str, edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    events = await _event_on_every_node(nodes)
    pictures = await edge_pictures(edge)
    a, b = nodes
    edge_id, picture, _ = pictures[0]
    status, _, body = await a.fetch(events[0]["images"][0]["url"])
    assert status == 200 and body == picture
    for node in nodes:
        async def cached(node: Central = node) -> bool:
            return (cache_dir(node) / str(edge_id)).is_file()

        await poll(cached, f"the picture in the cache of node {node.directory.name}")
    asked = len(await media_commands(edge))

    # Node A's cache bound frees its whole cache: its files go, and the shared rows say "not fetched". (In a
    # process of its own, as on node A: the edge runs in this one, on its own database.)
    evicted = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", FREE_ALL, postgres_url,
                                                      str(a.directory / "data" / "media"), str(tmp_path / "unused.db"),
                                                      f"central/test-site/{edge_id}"],
                                      capture_output=True, text=True, timeout=60, check=False)
    assert evicted.returncode == 0, evicted.stderr
    assert not (cache_dir(a) / str(edge_id)).exists()

    # Node B still serves its own copy, without asking the site; node A asks once more and serves it again.
    status, _, body = await b.fetch(events[1]["images"][0]["url"])
    assert status == 200 and body == picture
    assert len(await media_commands(edge)) == asked
    status, _, body = await a.fetch(events[0]["images"][0]["url"])
    assert status == 200 and body == picture
    assert len(await media_commands(edge)) == asked + 1
