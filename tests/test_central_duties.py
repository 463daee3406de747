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

from vmond.central.duties import Node
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
