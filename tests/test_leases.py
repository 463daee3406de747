"""Leases between central nodes (issue 19): one holder at a time, taken over only once expired by the database's
clock, renewed by the holder, released on a clean stop. Two holders on one database handle here (the models are
bound to one database per process); two central processes racing are in tests/test_central_nodes.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from vmond.store import leases
from vmond.store.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Each test on SQLite (None: the file in tmp_path), then on a fresh PostgreSQL database."""
    return str(request.getfixturevalue("postgres_url")) if request.param == "postgresql" else None



async def test_a_lease_has_one_holder_until_it_expires_then_another_takes_it(tmp_path: Path,
                                                                             db_url: str | None) -> None:
    async with Database(tmp_path / "vmond.db", url=db_url) as a:
        b = a
        assert await a.write(leases.hold, ["duty:outbox", "node:a"], "a", 1.0) == {"duty:outbox", "node:a"}
        assert await b.write(leases.hold, ["duty:outbox", "node:b"], "b", 1.0) == {"node:b"}
        assert await b.read(leases.holder, "duty:outbox") == "a"
        # the holder renews: still its own, and b still cannot take it
        assert await a.write(leases.hold, ["duty:outbox"], "a", 1.0) == {"duty:outbox"}
        taken = (await a.read(leases.holders, "duty:"))["duty:outbox"]["since"]
        assert await b.write(leases.hold, ["duty:outbox"], "b", 1.0) == set()
        # a stops renewing (it died): once the lease has expired by the database's clock, b takes it
        deadline = time.monotonic() + 5
        while not await b.write(leases.hold, ["duty:outbox"], "b", 10.0):
            assert time.monotonic() < deadline, "the expired lease was never taken over"
            await asyncio.sleep(0.05)
        now = await b.read(leases.holders, "duty:")
        assert now["duty:outbox"]["holder"] == "b" and now["duty:outbox"]["since"] > taken
        assert await a.write(leases.hold, ["duty:outbox"], "a", 1.0) == set()  # a, back, finds it taken
        assert await a.read(leases.expired_nodes) == ["a", "b"]  # oldest first
        assert await a.read(leases.live_nodes) == []  # both node leases ran out meanwhile (1 s)


async def test_a_released_lease_is_free_at_once_and_only_its_holder_releases_it(tmp_path: Path,
                                                                                db_url: str | None) -> None:
    async with Database(tmp_path / "vmond.db", url=db_url) as a:
        b = a
        await a.write(leases.hold, ["duty:sitewatch", "node:a"], "a", 60.0)
        assert await b.write(leases.release, ["duty:sitewatch"], "b") == 0  # not b's to give up
        assert await b.read(leases.holder, "duty:sitewatch") == "a"
        assert await a.write(leases.release, ["duty:sitewatch"], "a") == 1
        assert await b.read(leases.holder, "duty:sitewatch") is None
        assert await b.write(leases.hold, ["duty:sitewatch"], "b", 60.0) == {"duty:sitewatch"}
        assert await b.read(leases.live_nodes) == ["a"]

