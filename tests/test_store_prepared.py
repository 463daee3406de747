"""One mail's path through the store on both engines: the same results as before, with SQL text built once (the
prepared queries of vmond.store.prepared), not on every call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import peewee as pw
import pytest
from test_store import NOW, record

from vmond.store import eventqueries, outbox, prepared
from vmond.store.cameras import record_sessions
from vmond.store.changes import Change
from vmond.store.db import open_sqlite, run_transaction
from vmond.store.events import find_resend, get_event, record_mail
from vmond.store.messages import Topics
from vmond.store.models import Account, AuditEntry, Camera, Mail, UtcDateTimeField
from vmond.store.videos import camera_videos, clip_inputs

T = TypeVar("T")

DOMAIN = "monitor.local"
TOPICS = Topics("vmond", "test-site")


def cameras() -> None:
    account = Account.create(name="Test Customer")
    for local in ("camera-front", "camera-back"):
        Camera.create(account=account, name=local, smtp_local_part=local)


def write(db: pw.Database, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return run_transaction(db, lambda: fn(*args, **kwargs))


@pytest.fixture
def sql_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL statements peewee builds from a query object (``Database.execute``), as they are built."""
    built: list[str] = []
    execute = pw.Database.execute

    def counting(self: pw.Database, query: pw.BaseQuery, *args: object, **kwargs: object) -> object:
        built.append(query.sql()[0])
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(pw.Database, "execute", counting)
    yield built


def test_a_mails_path_gives_the_same_events_on_both_engines(store_db: pw.Database) -> None:
    write(store_db, cameras)
    first = write(store_db, record_mail, DOMAIN, record("a", images=2), 30.0, Change(TOPICS))
    assert first.created and [i["width"] for i in first.event["images"]] == [4, 4]
    assert first.event["camera"]["smtp_address"] == "camera-front@monitor.local"
    assert first.event["account"]["name"] == "Test Customer"
    # another mail within the window joins it, its pictures after the first ones
    more = write(store_db, record_mail, DOMAIN, record("b", seconds=10), 30.0, Change(TOPICS))
    assert not more.created and more.event["id"] == first.event["id"] and more.event["mail_count"] == 2
    assert [i["id"] for i in more.event["images"]][:2] == [i["id"] for i in first.event["images"]]
    assert len(more.event["images"]) == 3 and more.event["updated_at"] >= first.event["updated_at"]
    # a replay of a recorded mail creates nothing
    again = write(store_db, record_mail, DOMAIN, record("b", seconds=10), 30.0, Change(TOPICS))
    assert again.replayed and again.event == more.event
    # a recorder's other channel, and the same channel by name, are events of their own (IS NULL vs "= ?")
    channel = write(store_db, record_mail, DOMAIN, replace(record("c", seconds=12), channel="2"), 30.0)
    same_channel = write(store_db, record_mail, DOMAIN, replace(record("d", seconds=13), channel="2"), 30.0)
    named = write(store_db, record_mail, DOMAIN, replace(record("e", seconds=14), camera_name="Gate"), 30.0)
    assert channel.created and named.created
    assert same_channel.event["id"] == channel.event["id"] and same_channel.event["mail_count"] == 2
    # the "Stop" half of a pair closes its "Start" event after the window, only of the same type
    stop = replace(record("f", seconds=0), received_at=NOW + timedelta(minutes=5), phase="stop")
    stopped = write(store_db, record_mail, DOMAIN, stop, 30.0)
    assert stopped.event["id"] == first.event["id"] and stopped.event["mail_count"] == 3
    other = replace(stop, ingest_key="g", event_type="Tamper")
    assert write(store_db, record_mail, DOMAIN, other, 30.0).created
    # a test mail: its own event; the camera's mail times are kept, the last test mail only set by one
    test_at = NOW + timedelta(minutes=6)
    write(store_db, record_mail, DOMAIN, replace(record("t"), received_at=test_at, is_test=True, peer="10.0.0.9"), 0.0)
    write(store_db, record_mail, DOMAIN, replace(record("u"), received_at=test_at + timedelta(seconds=1)), 0.0)
    camera = run_transaction(store_db, lambda: Camera.get(Camera.smtp_local_part == "camera-front"))
    assert camera.last_mail_at == test_at + timedelta(seconds=1) and camera.test_mail_at == test_at
    assert camera.last_peer == "" and camera.name == "camera-front"  # the last mail's peer; the rest as it was
    # each event change queued its message, in order
    rows = run_transaction(store_db, lambda: outbox.pending(0, 10))
    assert [json.loads(r["payload"])["type"] for r in rows] == ["new", "update"]
    assert rows[0]["id"] < rows[1]["id"]


def test_a_resend_is_found_by_digest_camera_and_time(store_db: pw.Database) -> None:
    write(store_db, cameras)
    sent = replace(record("a"), sha256="1" * 64)
    event_id = write(store_db, record_mail, DOMAIN, sent, 30.0).event["id"]
    assert run_transaction(store_db, lambda: find_resend("camera-front", "1" * 64, NOW)) == event_id
    assert run_transaction(store_db, lambda: find_resend("camera-back", "1" * 64, NOW)) is None
    assert run_transaction(store_db, lambda: find_resend("camera-front", "2" * 64, NOW)) is None
    late = NOW + timedelta(hours=2)
    assert run_transaction(store_db, lambda: find_resend("camera-front", "1" * 64, late)) is None


def test_clip_inputs_list_pictures_in_order_and_camera_videos(store_db: pw.Database) -> None:
    write(store_db, cameras)
    event = write(store_db, record_mail, DOMAIN, record("a", images=2), 30.0).event
    inputs = run_transaction(store_db, lambda: clip_inputs(event["id"]))
    assert inputs == {"exists": True, "state": "none", "images": ["a-0.jpg", "a-1.jpg"], "clip": None,
                      "camera_videos": []}
    assert run_transaction(store_db, lambda: clip_inputs(event["id"] + 100))["exists"] is False
    assert run_transaction(store_db, lambda: camera_videos(event["id"])) == []


def test_an_insert_takes_its_defaults_afresh_and_returns_the_rows_id(store_db: pw.Database) -> None:
    write(store_db, cameras)
    first = write(store_db, prepared.insert, AuditEntry, action="a.b", target_type="event", target_id=1)
    second = write(store_db, prepared.insert, AuditEntry, action="a.c", target_type="event", target_id=2,
                   detail={"x": "ü"})
    rows = run_transaction(store_db, lambda: list(AuditEntry.select().order_by(AuditEntry.id)))
    assert [(r.id, r.action, r.detail, r.user_id) for r in rows] == [(first, "a.b", {}, None),
                                                                      (second, "a.c", {"x": "ü"}, None)]
    assert rows[0].at <= rows[1].at and rows[1].at.tzinfo is UTC


def test_a_prepared_query_follows_the_models_to_another_database(tmp_path: Path) -> None:
    for local in ("camera-one", "camera-two"):
        db = open_sqlite(tmp_path / f"{local}.db")  # binds the models to this file
        run_transaction(db, lambda local=local: Camera.create(account=Account.create(name="A"), name=local,
                                                              smtp_local_part=local))
        found = run_transaction(db, lambda: [eventqueries.camera_for_mail(name) is not None
                                             for name in ("camera-one", "camera-two")])
        assert found == [local == "camera-one", local == "camera-two"]
        db.close()


def test_a_joined_prepared_query_gives_models_with_their_joins(store_db: pw.Database) -> None:
    # vmond.store.prepared relies on peewee's private _get_cursor_wrapper to make rows as the query would
    write(store_db, cameras)
    event_id = write(store_db, record_mail, DOMAIN, record("a"), 30.0).event["id"]
    event = run_transaction(store_db, lambda: eventqueries.event_by_id(event_id))
    assert event.camera.name == "camera-front" and event.camera.account.name == "Test Customer"
    assert event.received_at == NOW.replace(second=0) and isinstance(event.flags, list)
    assert run_transaction(store_db, lambda: eventqueries.event_by_id(event_id + 1)) is None


def test_recording_a_mail_builds_no_sql_text_once_warm(store_db: pw.Database, sql_built: list[str]) -> None:
    write(store_db, cameras)
    warm = write(store_db, record_mail, DOMAIN, record("warm", "camera-back"), 30.0, Change(TOPICS))
    write(store_db, record_sessions, [([warm.event["camera"]["id"]], ["QUIT"], {})])
    run_transaction(store_db, lambda: find_resend("camera-back", "0" * 64, NOW))
    sql_built.clear()
    for n, key in enumerate("abc"):  # a new event, then two mails joining it
        received = datetime(2026, 1, 2, 3, 4, 10 + n, tzinfo=UTC)
        assert write(store_db, find_resend, "camera-front", key * 64, received) is None
        result = write(store_db, record_mail, DOMAIN, replace(record(key, seconds=10 + n), sha256=key * 64),
                       30.0, Change(TOPICS))
        write(store_db, clip_inputs, result.event["id"])
        write(store_db, record_sessions, [([result.event["camera"]["id"]], [f"MAIL FROM:<{key}@cam>"], {})])
    assert sql_built == []
    camera = run_transaction(store_db, lambda: Camera.get(Camera.smtp_local_part == "camera-front"))
    assert camera.last_transcript == ["MAIL FROM:<c@cam>"]
    assert run_transaction(store_db, lambda: Mail.select().count()) == 4
    assert run_transaction(store_db, lambda: get_event(DOMAIN, result.event["id"]))["mail_count"] == 3


def test_a_stored_utc_time_reads_back_as_written() -> None:
    # read with fromisoformat when the text is what db_value writes, as strptime read it
    field = UtcDateTimeField()
    for value in (NOW, NOW.replace(microsecond=123456), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                  datetime(2026, 6, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))):
        text = field.db_value(value)
        assert field.python_value(text) == value == datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC)
        assert field.python_value(text).tzinfo is UTC
    with pytest.raises(ValueError):
        field.python_value("2026-01-02 03:04:05")
