"""The database: one writer thread that coroutines await, a few reader threads, durable commits; SQLite (every
appliance, and a central by default) or PostgreSQL (a central station's ``storage.database``).

SQLite allows one writer at a time, and a blocking call on the event loop stalls SMTP and the dashboard, so every
statement runs on a thread of ours: writes on the single writer thread (each call one ``BEGIN IMMEDIATE``
transaction), reads on a small pool of reader threads with their own connections (WAL lets them read while the
writer writes). Coroutines submit a plain function and await its result, as datasette does.

Durability: WAL with ``synchronous=FULL`` fsyncs the log at every commit, so a committed event survives power
loss and the spool file that carried it may be deleted right after the commit returns.

On PostgreSQL the threads are the same, each with its own connection; other central nodes write at the same time,
so a write runs SERIALIZABLE and is run again, as a fresh attempt, when PostgreSQL reports a serialization failure
or a deadlock (at most :data:`MAX_ATTEMPTS` times, with a short random pause); reads run REPEATABLE READ READ ONLY
(:mod:`vmond.store.postgres` says why). A function given to :meth:`Database.write` may thus run more than once:
it must do nothing but database work (the seam builds its ``Change`` inside each attempt). A connection found
broken (the server restarted, the backend was terminated) is dropped: the call that met it gets its exception,
the thread's next job opens a new connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import peewee as pw

from vmond.config.types import Secret
from vmond.store import compact, migrations, pgschema
from vmond.store.models import MODELS
from vmond.store.postgres import (
    SERIALIZABLE,
    SNAPSHOT,
    PostgresDatabase,
    connection_lost,
    drop_connection,
    open_postgres,
    worth_retrying,
)
from vmond.util.logguard import keep_quiet

log = logging.getLogger(__name__)
# peewee logs each statement with its parameters at DEBUG: CSRF tokens, RTSP passwords, password hashes.
keep_quiet("peewee", logging.INFO)

T = TypeVar("T")

PRAGMAS = (
    # First: it only takes on a database without tables, and journal_mode=wal would write its first page.
    # Lets the disk keeper give free pages back (vmond.store.compact); older databases are switched at start.
    ("auto_vacuum", "incremental"),
    ("journal_mode", "wal"),
    ("synchronous", "full"),
    ("foreign_keys", 1),
    ("cache_size", -8000),  # KiB: small boxes have little memory to spare
    ("journal_size_limit", 64 << 20),  # bytes: a WAL that one big transaction grew is cut back after checkpoints
)
BUSY_TIMEOUT = 10.0  # seconds a connection waits for a lock held by another process (e.g. the CLI)
MAX_PENDING = 512  # queued calls per thread pool before callers wait: a flood backs up, memory does not grow
# PostgreSQL: attempts of one write before its serialization failure goes to the caller, and the longest pause
# between two (random below it: two nodes that collided do not collide again in step).
MAX_ATTEMPTS = 8
MAX_PAUSE = 0.2


def open_sqlite(path: Path) -> pw.SqliteDatabase:
    """A peewee database for *path* with our pragmas, models bound, schema migrated to the latest version.

    Connections are per thread (peewee's default); the caller's thread gets one now.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = pw.SqliteDatabase(str(path), pragmas=PRAGMAS, timeout=BUSY_TIMEOUT)
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    db.connect(reuse_if_open=True)
    migrations.migrate(db.connection(), path)
    return db


def open_postgresql(url: str, password: Secret | None = None) -> PostgresDatabase:
    """A peewee database for the PostgreSQL *url*, models bound, schema migrated (several nodes may do this at
    once: one migrates, the others wait). The caller's thread gets a connection now."""
    db = open_postgres(url, password)
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    db.connect(reuse_if_open=True)
    pgschema.migrate(db)
    return db


class DatabaseUnavailable(RuntimeError):
    """The configured PostgreSQL cannot be reached or refuses the login (the message says which, one line)."""


def open_configured(data_dir: Path, url: str | None, password: Secret | None = None) -> pw.Database:
    """The configuration's database for a command-line tool: PostgreSQL at *url*, else SQLite in *data_dir*."""
    if url is not None:
        try:
            return open_postgresql(url, password)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            raise DatabaseUnavailable(f"cannot open the database {url}: {_first_line(exc)}") from exc
    return open_sqlite(data_dir / "vmond.db")


class _DbThread(threading.Thread):
    """A thread that owns one connection and runs submitted functions, one at a time, each in a transaction."""

    def __init__(self, db: pw.Database, name: str, writer: bool) -> None:
        super().__init__(name=name, daemon=True)
        self._db = db
        self._writer = writer
        self.jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.last_done = time.monotonic()
        self.counts = Counts()

    def run(self) -> None:
        if isinstance(self._db, PostgresDatabase):
            self._db.use(SERIALIZABLE if self._writer else SNAPSHOT)
        else:
            self._db.connect(reuse_if_open=True)
        try:
            while (job := self.jobs.get()) is not None:
                call, future, loop = job
                try:
                    result = run_transaction(self._db, call, writer=self._writer, counts=self.counts)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    loop.call_soon_threadsafe(_deliver, future, None, exc)
                else:
                    loop.call_soon_threadsafe(_deliver, future, result, None)
                self.last_done = time.monotonic()
        finally:
            self._db.close()


class Counts:
    """PostgreSQL's trouble, counted: attempts run again after a conflict, connections dropped as broken."""

    def __init__(self) -> None:
        self.retries = 0
        self.reconnects = 0


def run_transaction(db: pw.Database, call: Callable[[], T], *, writer: bool = True,
                    counts: Counts | None = None) -> T:
    """*call()* in one transaction on this thread's connection: on SQLite ``BEGIN IMMEDIATE`` for a writer; on
    PostgreSQL a writer's serialization failure or deadlock is retried as a fresh attempt, and a broken connection
    is dropped (the exception goes to the caller; the next call connects again)."""
    if not isinstance(db, PostgresDatabase):
        with db.atomic("IMMEDIATE") if writer else db.atomic():
            return call()
    counts = counts if counts is not None else Counts()
    attempt = 1
    while True:
        try:
            db.connect(reuse_if_open=True)
            with db.atomic():
                result = call()
        except Exception as exc:
            if connection_lost(db):
                counts.reconnects += 1
                # peewee 3.14's rollback on the dead connection raises "connection already closed": the caller
                # gets what broke it instead (an OperationalError, like any other database trouble)
                cause = _what_broke(exc)
                log.warning("database: connection lost (%s: %s); a new one for the next call",
                            type(cause).__name__, _first_line(cause))
                drop_connection(db)
                raise cause from None
            if not (writer and worth_retrying(exc)) or attempt >= MAX_ATTEMPTS:
                if attempt > 1:
                    log.warning("database: a write still conflicted after %d attempts: %s", attempt,
                                _first_line(exc))
                raise
            counts.retries += 1
            log.debug("database: %s; attempt %d of %d", _first_line(exc), attempt + 1, MAX_ATTEMPTS)
            time.sleep(random.uniform(0, min(MAX_PAUSE, 0.005 * 2 ** attempt)))
            attempt += 1
            continue
        if attempt > 2:
            log.info("database: a write committed at attempt %d (it conflicted with another node's)", attempt)
        return result


def _what_broke(exc: BaseException) -> BaseException:
    """The first database error in *exc*'s context chain (past the rollback's "connection already closed")."""
    item: BaseException | None = exc
    while item is not None:
        if isinstance(item, pw.DatabaseError):
            return item
        item = item.__context__
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _deliver(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Database:
    """The daemon's database handle: ``await db.write(fn, *args)`` and ``await db.read(fn, *args)``.

    *fn* is a plain synchronous function using the peewee models; it runs inside a transaction on a database
    thread, and must return plain values (dicts, ints), not lazy queries. A cancelled caller does not undo a
    write that has started.
    """

    def __init__(self, path: Path, readers: int = 2, keep_free: int = 0,
                 extend_start: Callable[[float], None] | None = None, *, url: str | None = None,
                 password: Secret | None = None) -> None:
        self.path = path  # SQLite's file (unused with *url*)
        self.url = url  # PostgreSQL (storage.database); None: SQLite
        self._password = password
        self._keep_free = keep_free  # free disk a one-time VACUUM must leave (storage.min_free_space)
        self._extend_start = extend_start  # asks systemd for time when that VACUUM is due
        self._reader_count = readers
        self._db: pw.Database | None = None
        self._writer: _DbThread | None = None
        self._readers: list[_DbThread] = []
        self._next_reader = 0
        self._write_slots: asyncio.Semaphore | None = None
        self._read_slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> Database:
        loop = asyncio.get_running_loop()
        # Migration may take a while on a big database: do it on a thread, before the threads start.
        self._db = await loop.run_in_executor(None, self._open)
        self._writer = _DbThread(self._db, "db-writer", writer=True)
        self._readers = [_DbThread(self._db, f"db-reader-{i}", writer=False) for i in range(self._reader_count)]
        for thread in (self._writer, *self._readers):
            thread.start()
        self._write_slots = asyncio.Semaphore(MAX_PENDING)
        self._read_slots = asyncio.Semaphore(MAX_PENDING)
        log.info("database %s open (schema %d)", self.url or self.path, migrations.LATEST)
        return self

    @property
    def postgresql(self) -> bool:
        """On PostgreSQL (a central's ``storage.database``): SQLite's file tools (compact, backup) do not apply."""
        return self.url is not None

    @property
    def conflicts(self) -> int:
        """PostgreSQL: write attempts run again after a serialization failure or deadlock, since the start."""
        return self._writer.counts.retries if self._writer is not None else 0

    @property
    def reconnects(self) -> int:
        """PostgreSQL: connections found broken and replaced, since the start."""
        return sum(t.counts.reconnects for t in (self._writer, *self._readers) if t is not None)

    def status(self) -> dict[str, Any]:
        """For ``/api/health``: the engine, and PostgreSQL's conflicts and reconnections since the start."""
        return {"engine": "postgresql" if self.postgresql else "sqlite", "conflicts": self.conflicts,
                "reconnects": self.reconnects}

    def _open(self) -> pw.Database:
        if self.url is not None:
            pg = open_configured(self.path.parent, self.url, self._password)
            pg.close()  # this executor thread's connection; the database threads open their own
            return pg
        db = open_sqlite(self.path)
        # Before any other connection of ours is open:
        compact.switch_to_incremental(db.connection(), self.path, self._keep_free, self._extend_start)
        db.close()  # this executor thread's connection; the database threads open their own
        return db

    async def __aexit__(self, *exc_info: object) -> None:
        threads = [t for t in (self._writer, *self._readers) if t is not None]
        for thread in threads:
            thread.jobs.put(None)
        loop = asyncio.get_running_loop()
        for thread in threads:
            await loop.run_in_executor(None, thread.join)
        log.info("database closed")

    async def _submit(self, thread: _DbThread, slots: asyncio.Semaphore, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        async with slots:
            future: asyncio.Future[T] = loop.create_future()
            thread.jobs.put((call, future, loop))
            return await future

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run *fn(*args, **kwargs)* in one write transaction on the writer thread."""
        assert self._writer is not None and self._write_slots is not None, "database not open"
        return await self._submit(self._writer, self._write_slots, functools.partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run *fn(*args, **kwargs)* in a read transaction (a consistent snapshot) on a reader thread."""
        assert self._readers and self._read_slots is not None, "database not open"
        self._next_reader = (self._next_reader + 1) % len(self._readers)
        return await self._submit(self._readers[self._next_reader], self._read_slots,
                                  functools.partial(fn, *args, **kwargs))

    async def ping(self) -> float:
        """Round trip through the writer thread, in seconds: proof for the watchdog that writes still flow."""
        started = time.monotonic()
        await self.write(_select_one)
        return time.monotonic() - started


def _select_one() -> None:
    MODELS[0]._meta.database.execute_sql("SELECT 1")
