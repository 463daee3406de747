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
import subprocess
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


async def test_a_command_queued_on_either_node_is_sent_once_by_the_outbox_holder(
        tmp_path: Path, broker: Mosquitto, fleet: Fleet, shared: SharedDatabase) -> None:
    with central_node(tmp_path, broker.port, "node-a", shared) as a:
        await poll(lambda: asyncio.to_thread(lambda: shared.holders().get("duty:outbox") == "node-a"),
                   "node-a holds duty:outbox")
        with central_node(tmp_path, broker.port, "node-b", shared, first=False) as b:
            for _ in range(4):
                fleet.event(alarm_every=0)
            await poll(lambda: _active(b, 4), "the events on the wall")
            events = await b.list("/api/events", "events")
            for node, event in zip((b, a, b, a), events, strict=True):  # b holds no duty:outbox
                status, body = await node.call("POST", f"/api/events/{event['id']}/dismiss")
                assert status == 202, body
            await poll(lambda: asyncio.to_thread(lambda: len(fleet.commands) >= 4), "the commands at the sites")
            await poll(lambda: _all_done(a), "every command answered")
            # Sent once each: the sites saw each command id once, though both nodes' outboxes could read them.
            assert len(fleet.commands) == 4 and all(seen.ok for seen in fleet.commands)
            assert len({seen.command["id"] for seen in fleet.commands if seen.command}) == 4
            assert (await b.get("/api/health"))["mqtt"] == {"enabled": True, "connected": False, "elsewhere": True}


async def _active(central: Central, count: int) -> bool:
    return len(await central.list("/api/events", "events")) >= count


async def _all_done(central: Central) -> bool:
    commands = await central.list("/api/commands?state=all", "commands")
    return len(commands) == 4 and all(c["state"] == "done" for c in commands)


async def test_a_node_back_before_its_lease_expired_resumes_its_own_session(
        tmp_path: Path, broker: Mosquitto, fleet: Fleet, shared: SharedDatabase) -> None:
    with central_node(tmp_path, broker.port, "node-a", shared) as a:
        with central_node(tmp_path, broker.port, "node-b", shared, first=False) as b:
            publishing = flood(fleet, 300, rate=60)
            await poll(lambda: asyncio.to_thread(lambda: len(shared.events()) >= 50), "events flowing", timeout=30)
            assert a.process.popen is not None
            a.process.popen.kill()
            a.process.popen.wait()
            await asyncio.to_thread(a.restart)  # back within seconds: its node lease has not expired
            await asyncio.to_thread(publishing.join, 60)
            want = {origin: 1 for origin in fleet.origin.values()}
            await poll(lambda: asyncio.to_thread(lambda: every_event_once(fleet, shared) == want),
                       "every event mirrored exactly once", timeout=60)
            # node-a took its own session back (what it had not acknowledged came again): nothing to adopt.
            assert (await b.get("/api/health"))["central"]["adopted"] == 0
            assert (await a.get("/api/health"))["central"]["connected"]
            assert shared.holders()["node:node-a"] == "node-a"


async def test_a_second_process_under_a_running_nodes_name_exits_and_the_node_runs_on(
        tmp_path: Path, broker: Mosquitto, shared: SharedDatabase) -> None:
    """A cloned machine keeps its host name, the default central.node: its vmond must not join as the same node
    (shared leases, one MQTT client id fought over). It exits with one line; the running node is not disturbed."""
    with central_node(tmp_path, broker.port, "node-a", shared) as a:
        await poll(lambda: asyncio.to_thread(lambda: "node:node-a" in shared.holders()), "node-a up")
        twin = write_central_config(tmp_path / "twin", broker.port, {"database": shared.url}, node="node-a",
                                    sites="auto", command_secret=SECRET)
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "vmond", "run", "--config", str(twin)],
                                       capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert "vmond: another process is running as central node 'node-a'" in done.stderr.splitlines()[-1]
        health = await a.get("/api/health")
        assert health["cluster"]["displaced"] is False and health["central"]["connected"]
