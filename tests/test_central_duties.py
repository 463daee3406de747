"""Duties under leases (issue 19): a duty runs on the node holding its lease, a node that cannot renew stops it
before the lease could expire, a dead node's duty moves to another node, a wake-up reaches only the holder."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vmond.central.duties import Node, NodeNameTaken
from vmond.store import leases
from vmond.store.db import Database

FAST = {"renew": 0.1, "ttl": 1.0, "stop_after": 0.6}

@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Each test on SQLite (None: the file in tmp_path), then on a fresh PostgreSQL database."""
    return str(request.getfixturevalue("postgres_url")) if request.param == "postgresql" else None



class Probe:
    """A duty that notes when it runs and how often it was woken."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.woken = 0

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[Probe]:
        self.started.append(time.monotonic())
        try:
            yield self
        finally:
            self.stopped.append(time.monotonic())


async def until(check: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def test_a_node_that_cannot_renew_stops_its_duty_before_the_lease_expires(
        tmp_path: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Probe()
    async with Database(tmp_path / "vmond.db", url=db_url) as db, Node(db, "a", **FAST) as node:
        node.add("duty:probe", probe.run)
        await until(lambda: node.holds("duty:probe"), "the duty started")
        expires = (await db.read(leases.holders, "duty:"))["duty:probe"]["expires_at"]

        def unreachable(*args: Any) -> Any:
            raise OSError("the database is unreachable")

        monkeypatch.setattr(leases, "hold", unreachable)
        failed_at = time.monotonic()
        await until(lambda: probe.stopped, "the duty stopped")
        monkeypatch.undo()
        last = (await db.read(leases.holders, "duty:")).get("duty:probe")
        # Stopped after stop_after (not at the first failed renewal) and before the lease it last renewed expired.
        assert FAST["stop_after"] - FAST["renew"] * 2 <= probe.stopped[0] - failed_at < FAST["ttl"]
        assert last is None or last["expires_at"] >= expires
        await until(lambda: len(probe.started) == 2, "the duty taken again once renewing works")


async def test_a_dead_nodes_duty_moves_and_a_wake_up_reaches_only_its_holder(tmp_path: Path,
                                                                              db_url: str | None) -> None:
    on_a, on_b = Probe(), Probe()
    async with Database(tmp_path / "vmond.db", url=db_url) as db:
        a = await Node(db, "a", **FAST).__aenter__()
        a.add("duty:probe", on_a.run, wake=lambda probe: setattr(probe, "woken", probe.woken + 1))
        await until(lambda: a.holds("duty:probe"), "a holds the duty")
        async with Node(db, "b", **FAST) as b:
            b.add("duty:probe", on_b.run, wake=lambda probe: setattr(probe, "woken", probe.woken + 1))
            await asyncio.sleep(FAST["ttl"] * 1.5)
            assert not on_b.started and await db.read(leases.holder, "duty:probe") == "a"  # a renews: stays a's
            assert (a.wake("duty:probe"), b.wake("duty:probe")) == (True, False)
            assert (on_a.woken, on_b.woken) == (1, 0)
            assert a._task is not None
            a._task.cancel()  # a dies: no more renewals, nothing released
            died = time.monotonic()
            await until(lambda: b.holds("duty:probe"), "b took the duty", timeout=FAST["ttl"] * 3)
            assert FAST["ttl"] - FAST["renew"] * 2 <= time.monotonic() - died
            assert await db.read(leases.holder, "duty:probe") == "b"
            assert b.wake("duty:probe") and on_b.woken == 1
            status = await b.status()
            assert status["here"] == ["duty:probe"] and status["leases"]["duty:probe"]["holder"] == "b"
        # b stopped cleanly: its duty lease is free at once
        assert await db.read(leases.holder, "duty:probe") is None
        await a.__aexit__(None, None, None)


async def test_a_second_process_under_a_running_nodes_name_is_refused(tmp_path: Path, db_url: str | None) -> None:
    """Two nodes configured with one name (a cloned machine keeps its host name) would share leases and fight
    over one MQTT client id: the second start fails, and the first runs on undisturbed."""
    probe = Probe()
    async with Database(tmp_path / "vmond.db", url=db_url) as db, Node(db, "central", **FAST) as first:
        first.add("duty:probe", probe.run)
        await until(lambda: first.holds("duty:probe"), "the first holds the duty")
        started = time.monotonic()
        with pytest.raises(NodeNameTaken, match="central node 'central'.*its own `central.node`"):
            async with Node(db, "central", **FAST):
                pass
        assert time.monotonic() - started < FAST["stop_after"] + FAST["renew"] * 2  # seen renewing, not timed out
        await asyncio.sleep(FAST["ttl"])
        assert first.holds("duty:probe") and not first.displaced and probe.stopped == []


async def test_a_node_restarted_after_a_kill_takes_over_its_predecessors_leases(tmp_path: Path,
                                                                                db_url: str | None) -> None:
    """Killed and started again under its name: the new process waits to see that the old one is gone, keeping
    the node lease alive all along (so no other node adopts its broker session), then runs the duties."""
    before, after = Probe(), Probe()
    async with Database(tmp_path / "vmond.db", url=db_url) as db:
        old = await Node(db, "a", **FAST).__aenter__()
        old.add("duty:probe", before.run)
        await until(lambda: old.holds("duty:probe"), "the old process holds the duty")
        assert old._task is not None
        old._task.cancel()  # killed: no more renewals, nothing released
        started = time.monotonic()
        async with Node(db, "a", **FAST) as new:
            assert time.monotonic() - started >= FAST["stop_after"]  # it waited for a sign of life
            new.add("duty:probe", after.run)
            await until(lambda: new.holds("duty:probe"), "the new process took the duty")
            assert await db.read(leases.expired_nodes) == []  # the node lease never lapsed
            assert not new.displaced
        # A clean stop gives the name back: the next start does not wait.
        started = time.monotonic()
        async with Node(db, "a", **FAST):
            assert time.monotonic() - started < FAST["stop_after"]


async def test_a_process_that_lost_its_name_stops_its_duties(tmp_path: Path, db_url: str | None) -> None:
    """A node frozen long enough to be taken for dead finds another process running as itself: it stops its
    duties and says so, rather than running them twice."""
    probe = Probe()
    async with Database(tmp_path / "vmond.db", url=db_url) as db, Node(db, "a", **FAST) as frozen:
        frozen.add("duty:probe", probe.run)
        await until(lambda: frozen.holds("duty:probe"), "the duty runs")
        await db.write(leases.claim_instance, "a", "another-process", FAST["ttl"] * 10, force=True)
        await until(lambda: frozen.displaced and probe.stopped, "the duty stopped")
        assert (await frozen.status())["displaced"] is True
