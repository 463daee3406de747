"""The database: migrations match the models, YAML accounts sync without losing events, ingest is idempotent."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw
import pytest

from vmond.config import Config
from vmond.store import migrations
from vmond.store.db import Database, open_sqlite
from vmond.store.events import IngestRecord, MediaRecord, list_events, record_mail
from vmond.store.models import MODELS, Camera
from vmond.store.sync import sync_accounts

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(key: str, local: str = "camera-front", seconds: int = 0, images: int = 1) -> IngestRecord:
    at = NOW.replace(second=seconds)
    media = tuple(MediaRecord(kind="image", path=f"{key}-{n}.jpg", content_type="image/jpeg", sha256="0" * 64,
                              bytes=10, thumb_path=f"{key}-{n}.thumb.jpg", width=4, height=3) for n in range(images))
    return IngestRecord(ingest_key=key, local_part=local, received_at=at, event_time=at, event_type="Motion",
                        subject="Motion", media=media)


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    db = open_sqlite(tmp_path / "vmond.db")
    try:
        conn = db.connection()
        assert migrations.schema_version(conn) == migrations.LATEST
        for model in MODELS:
            table = model._meta.table_name
            columns = {row[1]: (row[2], bool(row[3])) for row in conn.execute(f'PRAGMA table_info("{table}")')}
            expected = {f.column_name: (f.field_type if f.field_type != "AUTO" else "INTEGER", not f.null)
                        for f in model._meta.sorted_fields}
            assert set(columns) == set(expected), table
            for name, (_, not_null) in expected.items():
                assert columns[name][1] == not_null or name == "id", (table, name)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a commit survives power loss
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        db.close()


def test_an_old_schema_is_backed_up_before_migrating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vmond.db"
    open_sqlite(path).close()
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS,
                                                   lambda conn: conn.execute("CREATE TABLE extra (x)")])
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST + 1)
    db = open_sqlite(path)
    db.close()
    backup = tmp_path / f"vmond.db.v{migrations.LATEST - 1}.bak"
    assert backup.is_file()
    with sqlite3.connect(backup) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST - 1
    old.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vmond.db"
    open_sqlite(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this vmond"):
        open_sqlite(path)


async def test_writes_are_serialised_and_reads_run_alongside(tmp_path: Path, config: Config) -> None:
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        results = await asyncio.gather(*(db.write(record_mail, "monitor.local", record(f"k{i}"), 0.0)
                                         for i in range(50)))
        assert sorted(r.event["id"] for r in results) == list(range(1, 51))
        listed = await asyncio.gather(*(db.read(list_events, "monitor.local", "all", 100) for _ in range(10)))
        assert all(len(events) == 50 for events in listed)
        with pytest.raises(pw.IntegrityError):
            await db.write(lambda: Camera.create(account=1, name="dup", smtp_local_part="camera-front"))
        assert await db.ping() < 1.0


async def test_ingest_is_idempotent_and_coalesces(tmp_path: Path, config: Config) -> None:
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        first = await db.write(record_mail, "monitor.local", record("a", seconds=0), 30.0)
        assert first.created and not first.replayed
        again = await db.write(record_mail, "monitor.local", record("a", seconds=0), 30.0)
        assert again.replayed and again.event["id"] == first.event["id"]
        burst = await db.write(record_mail, "monitor.local", record("b", seconds=20, images=2), 30.0)
        assert not burst.created and burst.event["id"] == first.event["id"]
        assert burst.event["mail_count"] == 2 and len(burst.event["images"]) == 3
        other_camera = await db.write(record_mail, "monitor.local", record("c", "camera-back", 21), 30.0)
        assert other_camera.created
        later = await db.write(record_mail, "monitor.local", record("d", seconds=59), 30.0)  # 39 s after "b"
        assert later.created
        events = await db.read(list_events, "monitor.local", "all", 10)
        assert len(events) == 3


async def test_yaml_sync_adds_updates_and_retires_but_keeps_events(tmp_path: Path,
                                                                   make_config: Callable[..., Config]) -> None:
    config = make_config()
    async with Database(tmp_path / "vmond.db") as db:
        counts = await db.write(sync_accounts, config.accounts)
        assert counts == {"accounts": 1, "cameras": 2, "retired": 0}
        await db.write(record_mail, "monitor.local", record("x", "camera-back"), 0.0)
        renamed = make_config(accounts=[{
            "name": "Test Customer",
            "address": "2 New Street",
            "cameras": [{"name": "Front Door (new)", "smtp_address": "camera-front"}],
        }])
        counts = await db.write(sync_accounts, renamed.accounts)
        assert counts == {"accounts": 1, "cameras": 1, "retired": 1}
        cameras = await db.read(lambda: {c.smtp_local_part: (c.name, c.active) for c in Camera.select()})
        assert cameras == {"camera-front": ("Front Door (new)", True), "camera-back": ("Back Yard", False)}
        events = await db.read(list_events, "monitor.local", "all", 10)
        assert len(events) == 1 and events[0]["camera"]["name"] == "Back Yard"
        assert events[0]["account"]["name"] == "Test Customer"


async def test_changes_are_queued_for_mqtt_in_the_same_transaction(tmp_path: Path, config: Config) -> None:
    import json

    from vmond.store import outbox
    from vmond.store.changes import Change
    from vmond.store.events import set_status
    from vmond.store.messages import Topics

    topics = Topics("vmond", "test-site")
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        first = await db.write(record_mail, "monitor.local", record("a"), 30.0, Change(topics))
        await db.write(record_mail, "monitor.local", record("b", seconds=5), 30.0, Change(topics))
        await db.write(record_mail, "monitor.local", record("b", seconds=5), 30.0, Change(topics))  # a replay
        await db.write(set_status, "monitor.local", first.event["id"], "dismissed", None, Change(topics))
        with pytest.raises(pw.IntegrityError):  # a failing transaction leaves no message behind
            await db.write(lambda: (outbox.enqueue("x", b"y"), Camera.create(account=1, name="d",
                                                                               smtp_local_part="camera-front")))
        rows = await db.read(outbox.pending, 0, 10)
        assert [r["topic"] for r in rows] == ["vmond/test-site/events"] * 3
        messages = [json.loads(r["payload"]) for r in rows]
        assert [m["type"] for m in messages] == ["new", "update", "update"]
        assert [m["event"]["status"] for m in messages] == ["active", "active", "dismissed"]
        assert len({m["id"] for m in messages}) == 3 and all(m["id"].startswith("test-site:") for m in messages)
        assert await db.write(outbox.delivered, [rows[0]["id"]]) == 1
        assert (await db.read(outbox.stats))["depth"] == 2
