"""The seam every change goes through: outbox rows in the change's transaction, then the bus (only after the commit,
in order), then a wake-up for whoever sends the outbox (only when rows were queued); nothing on a rollback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vmond.config import Config
from vmond.store import outbox
from vmond.store.alarms import acknowledge, raise_alarm
from vmond.store.changes import Change, Changes
from vmond.store.db import Database
from vmond.store.events import IngestRecord, record_mail
from vmond.store.messages import Topics
from vmond.store.models import Camera
from vmond.store.sync import sync_accounts
from vmond.store.users import create_user
from vmond.util.bus import Bus

TOPICS = Topics("vmond", "test-site")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class CheckingBus(Bus):
    """A bus that looks, at the moment of each publish, at what another connection can see of the database."""

    def __init__(self, path: Path) -> None:
        super().__init__(first_seq=0)
        self._path = path
        self.seen_rows: list[int] = []  # outbox rows committed when each message went out

    def publish(self, type_: str, data: dict[str, Any]) -> Any:
        with sqlite3.connect(self._path) as conn:
            self.seen_rows.append(conn.execute("SELECT count(*) FROM outbox_message").fetchone()[0])
        conn.close()
        return super().publish(type_, data)


@dataclass
class Seam:
    db: Database
    bus: CheckingBus
    changes: Changes
    wakes: list[str] = field(default_factory=list)

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        return [(m.type, m.data) for m in self.bus.since(0) or []]


@pytest.fixture
async def seam(tmp_path: Path, config: Config) -> AsyncIterator[Seam]:
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        bus = CheckingBus(tmp_path / "vmond.db")
        changes = Changes(db, bus, TOPICS)
        result = Seam(db, bus, changes)
        changes.on_queued(lambda: result.wakes.append("forwarder"))
        yield result


def _mail(key: str, is_test: bool = False) -> IngestRecord:
    return IngestRecord(ingest_key=key, local_part="camera-front", received_at=NOW, event_time=NOW,
                        event_type="Motion", subject="Motion", is_test=is_test)


def _three_messages(change: Change) -> int:
    change.announce("thing.one", {"n": 1})
    change.queue_alarm("new", {"event_id": None, "n": 1})
    change.announce("thing.two", {"n": 2})
    change.announce("thing.three", {"n": 3})
    return 42


async def test_messages_go_out_in_order_after_the_commit_then_the_sender_is_woken(seam: Seam) -> None:
    assert await seam.changes.record(_three_messages) == 42
    assert seam.published() == [("thing.one", {"n": 1}), ("thing.two", {"n": 2}), ("thing.three", {"n": 3})]
    # Each message went out when the outbox row was already visible to another connection: after the commit.
    assert seam.bus.seen_rows == [1, 1, 1]
    assert seam.wakes == ["forwarder"]


def _fails_after_announcing(change: Change) -> None:
    _three_messages(change)
    raise RuntimeError("the store function failed")


async def test_a_change_that_rolls_back_announces_nothing_and_wakes_nobody(seam: Seam) -> None:
    with pytest.raises(RuntimeError, match="store function failed"):
        await seam.changes.record(_fails_after_announcing)
    assert seam.published() == []
    assert seam.wakes == []
    assert await seam.db.read(outbox.pending) == []  # and its outbox row went with the transaction


def _announces_only(change: Change) -> None:
    change.announce("thing.local", {"n": 1})


async def test_the_sender_is_woken_only_when_outbox_rows_were_queued(seam: Seam, tmp_path: Path) -> None:
    await seam.changes.record(_announces_only)
    assert seam.published() == [("thing.local", {"n": 1})] and seam.wakes == []

    test_mail = await seam.changes.record(record_mail, "monitor.local", _mail("t", is_test=True), 30.0)
    assert seam.published()[-1] == ("event.created", test_mail.event)  # a test mail reaches the dashboards...
    assert seam.wakes == [] and await seam.db.read(outbox.pending) == []  # ...not the central station

    alarm = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 30.0)
    assert seam.published()[-1] == ("event.created", alarm.event)
    assert seam.wakes == ["forwarder"]
    assert [json.loads(r["payload"])["type"] for r in await seam.db.read(outbox.pending)] == ["new"]

    mqtt_off = Changes(seam.db, seam.bus, None)
    mqtt_off.on_queued(lambda: seam.wakes.append("forwarder"))
    other = await mqtt_off.record(record_mail, "monitor.local", _mail("b"), 0.0)
    assert seam.published()[-1] == ("event.created", other.event)
    assert seam.wakes == ["forwarder"] and len(await seam.db.read(outbox.pending)) == 1


async def test_a_replayed_mail_announces_nothing(seam: Seam) -> None:
    first = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 30.0)
    again = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 30.0)
    assert again.replayed and again.event["id"] == first.event["id"]
    assert [t for t, _ in seam.published()] == ["event.created"]
    assert seam.wakes == ["forwarder"]


async def test_a_batch_announces_an_object_once_with_its_newest_state(seam: Seam) -> None:
    guard = await seam.db.write(create_user, "guard", "x", "guard")
    mail = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 30.0)
    before = len(seam.published())
    async with seam.changes.batch() as batch:
        alarm, event, created = await batch.record(raise_alarm, "monitor.local", mail.event["id"], guard["id"])
        assert created and seam.published()[before:] == []  # nothing goes out before the batch ends
        taken = await batch.record(acknowledge, alarm["id"], guard["id"])
    assert alarm["state"] == "open" and taken["state"] == "acknowledged"
    assert seam.published()[before:] == [("event.updated", event), ("alarm.created", taken)]
    assert seam.wakes == ["forwarder", "forwarder"]  # once for the mail, once for the batch
    rows = await seam.db.read(outbox.pending)
    kinds = [(r["topic"].rsplit("/", 1)[1], json.loads(r["payload"])["type"]) for r in rows]
    assert kinds == [("events", "new"), ("events", "update"), ("alarms", "new"), ("alarms", "update")]


def _fails(change: Change) -> None:
    change.announce("thing.lost", {})
    Camera.create(account=1, name="duplicate", smtp_local_part="camera-front")  # violates the unique address


async def test_a_batch_announces_what_committed_and_not_what_rolled_back(seam: Seam) -> None:
    with pytest.raises(Exception, match="UNIQUE"):
        async with seam.changes.batch() as batch:
            await batch.record(_three_messages)
            await batch.record(_fails)
    assert [t for t, _ in seam.published()] == ["thing.one", "thing.two", "thing.three"]
    assert seam.wakes == ["forwarder"]
