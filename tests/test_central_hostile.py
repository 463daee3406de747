"""A central station against a hostile or broken site on the broker (issue 18): a running central, a real
mosquitto, and a publisher under the site's topics. Whatever it sends is mirrored bounded or dropped alone; the
message after it still arrives, and every message is mirrored once, across a kill -9 and a stop."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from centralsite import Central, central, poll  # noqa: F401 - fixtures
from mosquitto import Mosquitto, Subscriber
from test_mirror_store import event

from vmond.central import link as link_module
from vmond.central.link import MirrorLink
from vmond.central.sessions import OWN, MirrorSession
from vmond.config import Config
from vmond.mqtt.client import PAHO2, LinkSettings

pytestmark = pytest.mark.usefixtures("quick_mqtt")
SITE = "vmond/test-site"


class HostileSite:
    """Publishes anything under a site's topics, QoS 1, and waits for the broker to take it."""

    def __init__(self, port: int) -> None:
        self.link = Subscriber(port, [f"{SITE}/never"])

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.link.client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def event(self, remote_id: int, site: str = SITE, **fields: Any) -> None:
        body = event(id=remote_id, **{"subject": f"#{remote_id}", **fields})
        await self.publish(f"{site}/events", json.dumps({"type": "new", "event": body}))


@pytest.fixture
async def hostile(broker: Mosquitto) -> Any:
    site = HostileSite(broker.port)
    await site.link.ready()
    yield site
    site.link.close()


async def mirrored_ids(central: Central) -> list[int]:  # noqa: F811
    """The site's ids of the events the central lists (each published with the subject "#<id>")."""
    return sorted(int(e["subject"][1:]) for e in await central.list("/api/events?limit=1000", "events"))


async def until_mirroring(central: Central) -> None:  # noqa: F811
    await poll(lambda: _connected(central), "the central's subscription")


async def _connected(central: Central) -> bool:  # noqa: F811
    return bool((await central.get("/api/health"))["central"]["connected"])


async def test_broken_and_hostile_messages_are_dropped_alone_and_the_next_one_still_arrives(
        central: Central, hostile: HostileSite) -> None:  # noqa: F811
    await until_mirroring(central)
    for topic, payload in ((f"{SITE}/events", b"\xff\xfe\x00 not UTF-8"), (f"{SITE}/events", b"{not json"),
                           (f"{SITE}/events", b"[" * 200_000),  # nested deeper than Python's JSON parser goes
                           (f"{SITE}/status", b'{"outbox_depth": NaN, "heartbeat_at": "2999-01-01T00:00:00Z"}'),
                           (f"{SITE}/config", b"")):
        await hostile.publish(topic, payload)
    await hostile.event(2**70)  # beyond SQLite's integers
    await hostile.event(42, received_at="0005-01-01T00:00:00+00:00", subject="#42")
    await hostile.event(43, subject="x" * (5 << 20))  # 5 MB
    await hostile.event(44, site="vmond/central-1")  # the central's own site id
    await hostile.event(45, site="vmond/not-listed")
    await hostile.event(41)  # the good one
    await poll(lambda: _has(central, 41), "the good message after the bad ones")
    assert await mirrored_ids(central) == [41, 42]  # year 5 read as the time it arrived; the rest dropped
    health = (await central.get("/api/health"))["central"]
    assert health["dropped"] >= 6 and health["waiting"] == 0
    sites = (await central.get("/api/sites"))["sites"]
    assert [s["id"] for s in sites] == ["test-site"] and sites[0]["outbox_depth"] is None


async def _has(central: Central, remote_id: int) -> bool:  # noqa: F811
    return remote_id in await mirrored_ids(central)


async def test_every_message_is_mirrored_once_across_a_kill_and_while_the_central_is_down(
        central: Central, hostile: HostileSite) -> None:  # noqa: F811
    await until_mirroring(central)
    for n in range(1, 201):
        await hostile.event(n)
    await poll(lambda: _count_at_least(central, 20), "some mirrored before the kill")
    central.process.stop(signal.SIGKILL)  # between a commit and its acknowledgement, likely
    for n in range(201, 251):  # while it is down: kept by the broker in the central's session
        await hostile.event(n)
    central.process.start()
    started = time.monotonic()
    await poll(lambda: _count_at_least(central, 250), "every message after the restart", timeout=60)
    assert await mirrored_ids(central) == list(range(1, 251)), time.monotonic() - started


async def _count_at_least(central: Central, count: int) -> bool:  # noqa: F811
    return len(await mirrored_ids(central)) >= count


class RecordingClient:
    """What the link asks of its paho client, recorded: subscriptions and acknowledgements."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []

    def subscribe(self, topics: Any) -> None:
        pass

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


def test_a_message_is_acknowledged_only_on_the_connection_that_delivered_it(
        make_config: Callable[..., Config]) -> None:
    config = make_config(central={"mqtt": {"host": "127.0.0.1"}, "sites": "auto"})
    link = MirrorLink(config, None, None, None)  # type: ignore[arg-type] # neither store nor thread is used
    client = RecordingClient()
    loop = asyncio.new_event_loop()  # the session tells the loop of (dis)connections: nobody listens here
    session = _session(link, loop)
    session.client = client  # type: ignore[assignment]
    session._on_connect(client, None, {}, 0)  # type: ignore[arg-type]
    message = mqtt.MQTTMessage(mid=7, topic=b"vmond/site-a/events")
    message.payload, message.qos = b"{}", 1
    before = link._item(session, message)
    session._on_connect(client, None, {}, 0)  # type: ignore[arg-type] # the broker lost us meanwhile
    assert before is not None
    link._done(before)
    assert client.acks == []  # mid 7 of the new connection may be another message, not yet committed
    again = link._item(session, message)  # the broker's copy on the new connection
    assert again is not None
    link._done(again)
    assert client.acks == ([(7, 1)] if PAHO2 else [])  # paho 1.6 acknowledges when on_message returns
    loop.close()


def _session(link: MirrorLink, loop: asyncio.AbstractEventLoop) -> MirrorSession:
    return MirrorSession(OWN, LinkSettings("127.0.0.1", 1883, "vmond-central-node", 30), ["vmond/+/events"],
                         link._on_message, prefix="vmond", node="node", loop=loop)


async def test_after_a_broker_restart_the_central_subscribes_again_and_mirrors_on(
        central: Central, hostile: HostileSite, broker: Mosquitto) -> None:  # noqa: F811
    await until_mirroring(central)
    await hostile.event(1)
    await poll(lambda: _has(central, 1), "the first event")
    await broker.astop()  # no persistence: the broker forgets the central's session and subscriptions
    await broker.astart()
    await hostile.link.ready(timeout=30)
    await poll(lambda: _connected(central), "the central back on the broker", timeout=60)
    await hostile.event(2)
    await poll(lambda: _has(central, 2), "an event published after the restart", timeout=30)


async def test_on_paho_1_6_a_message_is_not_acknowledged_before_its_commit_however_long_the_store_takes(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "PAHO2", False)  # paho 1.6's way: acknowledged when on_message returns
    config = make_config(central={"mqtt": {"host": "127.0.0.1"}, "sites": "auto"})
    link = MirrorLink(config, None, None, None)  # type: ignore[arg-type] # nothing mirrors: the store is "stuck"
    link._loop = asyncio.get_running_loop()
    message = mqtt.MQTTMessage(mid=7, topic=b"vmond/site-a/events")
    message.payload, message.qos = b"{}", 1
    session = _session(link, link._loop)
    returned = asyncio.ensure_future(asyncio.to_thread(link._on_message, session, RecordingClient(), message))  # type: ignore[arg-type]
    await asyncio.wait_for(link._queue.get(), 5)  # handed to the loop, never committed
    done, _ = await asyncio.wait([returned], timeout=2.5 * link_module.CLOSING_CHECK)
    assert not done  # still waiting: returning would acknowledge a message not stored
    link.closing = True  # closing: DISCONNECT goes first, so the return acknowledges nothing
    await asyncio.wait_for(returned, 5)
