"""The database gives the pages that removals free back to the file system: new databases are
``auto_vacuum=INCREMENTAL``, an older one is switched by a one-time VACUUM at start when there is room, and the
disk keeper returns free pages after retention removed rows."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import namedtuple
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Daemon

from vmond.config import Config
from vmond.daemon import running
from vmond.store import compact, migrations
from vmond.store.db import Database, open_sqlite
from vmond.store.models import AuditEntry, utcnow

DETAIL = {"note": "x" * 400}


def pragmas(path: Path) -> dict[str, int]:
    """auto_vacuum, free pages and the file's size, through a connection of the test's own (after a checkpoint,
    so that the file is what the database holds)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        assert busy == 0, "the checkpoint could not finish"
        return {"auto_vacuum": conn.execute("PRAGMA auto_vacuum").fetchone()[0],
                "free": conn.execute("PRAGMA freelist_count").fetchone()[0], "size": path.stat().st_size}


def old_database(path: Path) -> None:
    """A database as vmond made it before: auto_vacuum off, and many free pages after a big removal."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        migrations.migrate(conn, None)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO audit_entry (at, action, target_type, detail) VALUES (?, ?, ?, ?)",
                         [("2020-01-01T00:00:00.000000Z", "session.web", "user", "x" * 400)] * 5000)
        conn.execute("COMMIT")
        conn.execute("DELETE FROM audit_entry")


def test_a_new_database_is_incremental(tmp_path: Path) -> None:
    open_sqlite(tmp_path / "vmond.db").close()
    assert pragmas(tmp_path / "vmond.db")["auto_vacuum"] == compact.INCREMENTAL


async def test_an_old_database_is_switched_once_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "vmond.db"
    old_database(path)
    before = pragmas(path)
    assert before["auto_vacuum"] == 0 and before["free"] > 500
    async with Database(path) as db:
        assert await db.read(lambda: AuditEntry.select().count()) == 0  # opens and works as before
    after = pragmas(path)
    assert after["auto_vacuum"] == compact.INCREMENTAL and after["free"] == 0
    assert after["size"] < before["size"] / 4
    assert sum("one-time VACUUM" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    async with Database(path):
        pass
    assert not [r for r in caplog.records if "VACUUM" in r.getMessage()]  # once only


async def test_without_room_the_switch_waits_for_a_later_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "vmond.db"
    old_database(path)
    size = path.stat().st_size
    usage = namedtuple("usage", "total used free")
    # Room for one copy of the database but not for two, beyond the free space the daemon must keep:
    monkeypatch.setattr(compact.shutil, "disk_usage", lambda _: usage(10**12, 0, 10**8 + size + 4096))
    async with Database(path, keep_free=10**8) as db:
        await db.write(lambda: AuditEntry.create(action="session.web", target_type="user", detail={}))
    assert pragmas(path)["auto_vacuum"] == 0
    assert [r for r in caplog.records if r.levelno == logging.WARNING and "not switching" in r.getMessage()]


async def test_the_keeper_gives_free_pages_back_after_removing(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "audit_retention": "90d"})
    path = config.storage.data_dir / "vmond.db"
    async with running(config) as services:
        daemon = Daemon(services)
        old = utcnow() - timedelta(days=100)
        for _ in range(5):
            await daemon.services.db.write(lambda: AuditEntry.insert_many(
                [{"at": old, "action": "session.api", "target_type": "user", "detail": DETAIL}] * 2000).execute())
        full = await asyncio.to_thread(pragmas, path)
        await services.disk.round()
        emptied = await asyncio.to_thread(pragmas, path)
    assert full["free"] < 50
    assert emptied["free"] < 50  # given back, not kept on the free list
    assert emptied["size"] < full["size"] / 4, (full, emptied)
