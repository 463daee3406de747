"""Several central nodes on one database behind one broker (issue 19): each site message is taken by one node
(shared subscription) and lands once; a node killed with SIGKILL while messages flow loses nothing (a survivor
adopts its broker session), its duties move to the survivor within seconds; a node that stops cleanly leaves the
group, so nothing waits for it.

The sites are simulated as the central bench does (bench/sites.py: messages made by vmond's own store code,
published straight to the broker). The nodes share one PostgreSQL database (``storage.database``), as several
central nodes do; the rows are counted per site and remote id in that database."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from centralsite import QUICK_RECONNECT, SECRET, Central, poll, write_central_config
from daemon_process import process_with_admin
from mosquitto import Mosquitto, Subscriber
from postgres import PostgresCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from sites import Fleet  # noqa: E402 - bench/ is not a package

SITES = 4


@dataclass(frozen=True)
class SharedDatabase:
    """The PostgreSQL database the nodes share: its URL, and the test's own queries on it."""

    cluster: PostgresCluster
    name: str
    url: str

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.cluster.execute(sql, dbname=self.name)

    def events(self) -> dict[tuple[str, int], int]:
        """(site, remote id) -> how many event rows the central has for it."""
        rows = self.query('SELECT s."key", e."remote_id", COUNT(*) FROM "alarm_event" e JOIN "site" s '
                          'ON s."id" = e."site_id" GROUP BY s."key", e."remote_id"')
        return {(site, remote): count for site, remote, count in rows}

    def holders(self) -> dict[str, str]:
        """The live leases: name -> holder (the test and the database share this machine's clock)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {name: holder for name, holder, expires in self.query('SELECT "name", "holder", "expires_at" '
                                                                     'FROM "lease"') if expires > now}


@pytest.fixture
def shared(postgres: PostgresCluster, postgres_db: str, postgres_url: str) -> SharedDatabase:
    return SharedDatabase(postgres, postgres_db, postgres_url)


@contextlib.contextmanager
def central_node(root: Path, port: int, node: str, database: SharedDatabase, first: bool = True
                 ) -> Iterator[Central]:
    """Central node *node* (``vmond run``) in *root*/<node> on *database*; the *first* adds the admin user."""
    directory = root / node
    config = write_central_config(directory, port, {"database": database.url}, node=node, sites="auto",
                                  command_secret=SECRET)
    with process_with_admin(directory, config, admin=first) as process:
        process.prelude = QUICK_RECONNECT
        process.start()
        yield Central(process, directory)
        if process.popen is not None and process.popen.poll() is None:
            assert process.stop() == 0


@pytest.fixture
def fleet(tmp_path: Path, broker: Mosquitto) -> Iterator[Fleet]:
    sites = Fleet(broker.port, sites=SITES, cameras=2, connections=2, secret=SECRET, scratch=tmp_path, seed=19)
    sites.publish_retained()
    yield sites
    sites.close()


def flood(fleet: Fleet, count: int, rate: float) -> threading.Thread:
    """Publish *count* new events at about *rate* per second on a thread of its own (started)."""
    def run() -> None:
        for n in range(count):
            fleet.event(alarm_every=0)
            if n % 5 == 4:
                time.sleep(5 / rate)
    thread = threading.Thread(target=run, name="flood", daemon=True)
    thread.start()
    return thread


def every_event_once(fleet: Fleet, database: SharedDatabase) -> dict[tuple[str, int], int]:
    want = {origin: 1 for origin in fleet.origin.values()}
    return {key: n for key, n in database.events().items() if key in want or n != 1}


async def test_two_nodes_share_the_sites_messages_and_each_lands_once(tmp_path: Path, broker: Mosquitto,
                                                                      fleet: Fleet, shared: SharedDatabase) -> None:
    with central_node(tmp_path, broker.port, "node-a", shared) as a, \
            central_node(tmp_path, broker.port, "node-b", shared, first=False) as b:
        database = shared
        for _ in range(200):
            fleet.event(alarm_every=0)
        want = {origin: 1 for origin in fleet.origin.values()}
        await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, database) == want),
                   "every event mirrored exactly once", timeout=60)
        health = [await node.get("/api/health") for node in (a, b)]
        # Both nodes took a share (the broker's round robin), and together every message once.
        assert all(h["central"]["mirrored"] > 0 for h in health), [h["central"] for h in health]
        assert [h["central"]["client_id"] for h in health] == ["vmond-central-1-node-a", "vmond-central-1-node-b"]
        # The retained copies (config) reached the database though the shared subscription does not carry them.
        named = dict(database.query('SELECT "key", "name" FROM "site"'))
        assert named == {site.id: f"Bench site {site.index}" for site in fleet.sites}
        # Each duty is held by one node, and both nodes say so.
        holders = await asyncio.to_thread(database.holders)
        assert {holders[d] for d in ("duty:outbox", "duty:sitewatch", "duty:notify")} <= {"node-a", "node-b"}
        assert holders["node:node-a"] == "node-a" and holders["node:node-b"] == "node-b"
        for h in health:
            assert {k: v["holder"] for k, v in h["cluster"]["leases"].items()
                    if k.startswith("duty:")} == {d: holders[d] for d in holders if d.startswith("duty:")}
        runs = sorted(d for h in health for d in h["cluster"]["here"])
        assert runs == ["duty:notify", "duty:outbox", "duty:sitewatch"]  # each on exactly one node


async def test_a_node_killed_under_load_loses_nothing_and_its_duties_move(tmp_path: Path, broker: Mosquitto,
                                                                          fleet: Fleet, shared: SharedDatabase) -> None:
    with central_node(tmp_path, broker.port, "node-a", shared) as a:
        database = shared
        await poll(lambda: asyncio.to_thread(lambda: "duty:outbox" in database.holders()), "duties taken")
        with central_node(tmp_path, broker.port, "node-b", shared, first=False) as b:
            assert set((await asyncio.to_thread(database.holders)).values()) >= {"node-a"}
            publishing = flood(fleet, 600, rate=60)
            await poll(lambda: asyncio.to_thread(lambda: len(database.events()) >= 150),
                       "events flowing", timeout=30)
            assert a.process.popen is not None
            a.process.popen.kill()  # SIGKILL: acknowledged nothing more, holds the duties and a session
            a.process.popen.wait()
            killed = time.monotonic()
            # The duties move to the survivor within seconds (the lease's 10 s, and a renewal).
            await poll(lambda: asyncio.to_thread(lambda: all(
                database.holders().get(d) == "node-b" for d in ("duty:outbox", "duty:sitewatch",
                                                                     "duty:notify"))),
                       "the duties on node-b", timeout=20)
            moved = time.monotonic() - killed
            await asyncio.to_thread(publishing.join, 60)
            want = {origin: 1 for origin in fleet.origin.values()}
            assert len(want) == 600
            await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, database) == want),
                       "every event mirrored exactly once", timeout=60)
            health = await b.get("/api/health")
            assert health["central"]["adopted"] == 1, health["central"]  # node-a's session emptied and erased
            assert sorted(health["cluster"]["here"]) == ["duty:notify", "duty:outbox", "duty:sitewatch"]
            assert "node:node-a" not in health["cluster"]["leases"]
            assert moved < 16, moved
            # Nothing waits in node-a's session any more: new events all reach node-b at once.
            before = len(fleet.origin)
            for _ in range(40):
                fleet.event(alarm_every=0)
            assert len(fleet.origin) == before + 40
            want = {origin: 1 for origin in fleet.origin.values()}
            await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, database) == want),
                       "the new events on node-b", timeout=10)


async def test_a_node_that_stops_cleanly_leaves_the_group(tmp_path: Path, broker: Mosquitto, fleet: Fleet,
                                                          shared: SharedDatabase) -> None:
    with central_node(tmp_path, broker.port, "node-a", shared) as a:
        database = shared
        with central_node(tmp_path, broker.port, "node-b", shared, first=False) as b:
            await poll(lambda: asyncio.to_thread(lambda: "node:node-b" in database.holders()), "node-b up")
            assert b.process.stop() == 0  # SIGTERM: leaves the group, its session erased
        assert "node:node-b" not in await asyncio.to_thread(database.holders)
        for _ in range(60):
            fleet.event(alarm_every=0)
        want = {origin: 1 for origin in fleet.origin.values()}
        # Had node-b's session stayed in the group, half of these would wait there; they all land now.
        await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, database) == want),
                   "every event on node-a", timeout=10)
        assert (await a.get("/api/health"))["central"]["adopted"] == 0




async def test_the_session_of_a_central_from_before_several_nodes_is_emptied(
        tmp_path: Path, broker: Mosquitto, fleet: Fleet, shared: SharedDatabase) -> None:
    # The central of issue 18 subscribed as <client_id>-mirror, not shared; it was stopped for the upgrade, and
    # the sites went on publishing into its session.
    old = Subscriber(broker.port, ["vmond/+/events"], client_id="vmond-central-1-mirror", clean_session=False)
    await old.ready()
    old.close()
    for _ in range(30):
        fleet.event(alarm_every=0)
    want = {origin: 1 for origin in fleet.origin.values()}
    with central_node(tmp_path, broker.port, "node-a", shared):
        database = shared
        # The retained copies make the sites, the old session's queue their events.
        await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, database) == want),
                   "the events the old session held", timeout=20)
