"""Live updates across central nodes (issue 19): two bridges on one real PostgreSQL, each with its own bus.

What one node's seam announces reaches the other node's bus within a second, and its own bus once; a payload too
big for a notification goes through the payload table; a change that queued outbox or notification rows wakes the
other node's senders; a lost connection is taken up again and the dashboards on both sides are told to resync;
the queues are bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from vmond.central import crossnode
from vmond.central.crossnode import BusBridge
from vmond.store.changes import Change, Changes
from vmond.store.db import Database
from vmond.util.bus import Bus

ARRIVAL = 1.0  # seconds a message may take from one node's bus to another's


class Node:
    """One central node as the bridge sees it: a bus, a seam on it, a bridge, and what woke its senders."""

    def __init__(self, name: str, db: Database) -> None:
        self.name = name
        self.bus = Bus(first_seq=0)
        self.changes = Changes(db, self.bus, None)
        self.wakes: list[str] = []
        self.changes.on_queued(lambda: self.wakes.append("outbox"))
        self.changes.on_notified(lambda: self.wakes.append("notify"))
        self.bridge: BusBridge | None = None

    def seen(self, type_: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(m.type, m.data) for m in self.bus.since(0) or [] if type_ is None or m.type == type_]

    async def announce(self, type_: str, data: dict[str, Any], *, queued: int = 0, notified: int = 0) -> None:
        await self.changes.record(_announcing, type_, data, queued, notified)


def _announcing(type_: str, data: dict[str, Any], queued: int, notified: int, change: Change) -> None:
    change.announce(type_, data)
    change.queued += queued
    change.notified += notified


async def until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := check()):
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)
    return found


@contextlib.asynccontextmanager
async def bridged(node: Node, dsn: str) -> AsyncIterator[BusBridge]:
    async with BusBridge(dsn, node.name, node.changes) as bridge:
        node.bridge = bridge
        yield bridge


@pytest.fixture
async def nodes(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[Node, Node]]:
    async with Database(tmp_path / "seam.db") as db:  # the seam's own transactions; the bridge is PostgreSQL's
        a, b = Node("node-a", db), Node("node-b", db)
        async with bridged(a, postgres_url), bridged(b, postgres_url):
            for node in (a, b):
                assert node.bridge is not None
                await asyncio.wait_for(node.bridge.listening.wait(), 10)
            yield a, b


def _sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


async def test_a_message_reaches_the_other_node_once_and_not_its_sender_again(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    loop = asyncio.get_running_loop()
    started = loop.time()
    await a.announce("event.created", {"id": 7, "site": {"id": "s1", "name": "Site 1"}})
    await until(lambda: b.seen("event.created"), "node B's bus has node A's event", ARRIVAL)
    assert loop.time() - started < ARRIVAL
    assert b.seen() == [("event.created", {"id": 7, "site": {"id": "s1", "name": "Site 1"}})]
    # B answers; once A has B's message, an echo of A's own (sent before it) would have come too.
    await b.announce("alarm.created", {"id": 3})
    await until(lambda: a.seen("alarm.created"), "node A's bus has node B's alarm", ARRIVAL)
    assert a.seen() == [("event.created", {"id": 7, "site": {"id": "s1", "name": "Site 1"}}),
                        ("alarm.created", {"id": 3})]
    assert b.seen() == [("event.created", {"id": 7, "site": {"id": "s1", "name": "Site 1"}}),
                        ("alarm.created", {"id": 3})]


async def test_many_messages_arrive_in_order_and_identical_ones_are_not_folded(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    async with a.changes.batch() as batch:
        for n in range(250):
            await batch.record(_announcing, "event.updated", {"id": n % 5}, 0, 0)  # the seam folds per object...
    for _ in range(3):
        await a.announce("site.updated", {"id": "same"})  # ...PostgreSQL must not fold these three
    await until(lambda: len(b.seen("site.updated")) == 3, "three identical messages on node B")
    assert [data["id"] for _, data in b.seen("event.updated")] == [n % 5 for n in range(250)]


async def test_a_payload_too_big_for_a_notification_travels_through_the_table(
        nodes: tuple[Node, Node], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = nodes
    big = {"id": 1, "notes": ["ü" * 1000 + str(n) for n in range(40)]}  # ~80 KB of JSON (8000 bytes is the limit)
    await a.announce("alarm.updated", big)
    await until(lambda: b.seen("alarm.updated"), "node B has the big message", ARRIVAL)
    assert b.seen("alarm.updated") == [("alarm.updated", big)]
    assert _sql(postgres_url, "SELECT count(*) FROM vmond_bus_payload") == [(1,)]
    # Kept for a minute, then pruned.
    monkeypatch.setattr(crossnode, "PAYLOAD_KEEP", 0.0)
    monkeypatch.setattr(crossnode, "PRUNE_EVERY", 0.1)
    await a.announce("nudge", {})  # the bridge's thread looks at its prune time again
    await until(lambda: _sql(postgres_url, "SELECT count(*) FROM vmond_bus_payload") == [(0,)],
                "the stored payload is pruned")


async def test_a_change_that_queued_rows_wakes_the_other_nodes_senders(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await a.announce("command.created", {"id": 1}, queued=1)
    await until(lambda: b.wakes == ["outbox"], f"node B's outbox sender is woken {b.wakes} {b.seen()}")
    assert a.wakes == ["outbox"]  # its own, once
    await a.announce("alarm.created", {"id": 2}, notified=1)
    await until(lambda: b.wakes == ["outbox", "notify"], "node B's notification sender is woken")
    assert [type_ for type_, _ in b.seen()] == ["command.created", "alarm.created"]  # a wake-up is no bus message


async def test_a_lost_connection_is_taken_up_again_and_both_sides_resync(
        nodes: tuple[Node, Node], postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossnode, "RECONNECT_DELAY", (0.1, 0.5))
    a, b = nodes
    assert b.bridge is not None
    killed = _sql(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                  "vmond-bus-node-b")
    assert killed == [(True,)]
    await until(lambda: b.seen("resync"), "node B's dashboards are told to resync")
    await until(lambda: a.seen("resync"), "node A's dashboards are told to resync (B may have missed sending)")
    assert b.bridge.reconnects == 1
    await a.announce("event.created", {"id": 9})
    await until(lambda: b.seen("event.created"), "node B hears node A again", ARRIVAL)


async def test_what_waits_to_be_sent_is_bounded_and_a_resync_follows(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossnode, "QUEUE_LIMIT", 50)
    monkeypatch.setattr(crossnode, "RECONNECT_DELAY", (0.1, 0.2))
    async with Database(tmp_path / "seam.db") as db:
        a, b = Node("node-a", db), Node("node-b", db)
        async with bridged(b, postgres_url):
            assert b.bridge is not None
            await asyncio.wait_for(b.bridge.listening.wait(), 10)
            # Node A's PostgreSQL is unreachable (a closed port): what it announces waits, up to the limit.
            async with bridged(a, "postgresql://nobody@127.0.0.1:1/none") as bridge:
                for n in range(80):
                    await a.announce("event.updated", {"id": n})
                assert bridge.dropped == 30
                assert len(a.seen()) == 80  # its own dashboards miss nothing
                # PostgreSQL is there again: node A's bridge sends what it kept, then tells the others to resync.
                bridge._dsn = postgres_url
                await until(lambda: len(b.seen("event.updated")) == 50, "node B has what node A kept")
                assert [data["id"] for _, data in b.seen("event.updated")] == list(range(50))
                await until(lambda: b.seen("resync"), "node B is told to resync")


async def test_after_postgresql_restarts_the_nodes_hear_each_other_again_and_resync(
        nodes: tuple[Node, Node], postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossnode, "RECONNECT_DELAY", (0.1, 0.5))
    a, b = nodes
    await asyncio.to_thread(postgres.restart)
    for node in (a, b):
        await until(lambda node=node: node.seen("resync"), f"{node.name}'s dashboards are told to resync", 30)
        assert node.bridge is not None
        await asyncio.wait_for(node.bridge.listening.wait(), 30)
    await a.announce("event.created", {"id": 11})
    await until(lambda: b.seen("event.created"), "node B hears node A after the restart", ARRIVAL)
    await b.announce("event.created", {"id": 12})
    await until(lambda: len(a.seen("event.created")) == 2, "node A hears node B after the restart", ARRIVAL)


async def test_a_message_the_bridge_cannot_send_never_fails_the_change_and_the_others_resync(
        nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, b = nodes
    await a.announce("event.updated", {"id": 1, "at": object()})  # not JSON: committed and published here all the same
    assert [type_ for type_, _ in a.seen()] == ["event.updated"]
    await until(lambda: b.seen("resync"), "node B is told to resync")
    assert "could not send event.updated to the other central nodes" in caplog.text
