"""PostgreSQL for a central station: the peewee database, each connection's transaction characteristics, and
how its errors are told apart (a conflict worth a fresh attempt, a lost connection).

Isolation (why): the store's functions were written for SQLite, where one writer runs at a time, so each sees
the database as its transaction began and nothing changes under it. Several central nodes write the same rows at
once on PostgreSQL, so every write transaction runs SERIALIZABLE: PostgreSQL then commits only transactions whose
outcome equals some one-at-a-time order, and aborts the others with a serialization failure (40001; a deadlock is
40P01), which :mod:`vmond.store.db` retries as a fresh attempt. A store function thus behaves as under SQLite's
single writer, whatever another node does meanwhile; the outbox row and the change it reports still commit
together. Reads run REPEATABLE READ READ ONLY: one snapshot for the whole read, like a SQLite read transaction;
read-only snapshots never need a retry.

The characteristics are set per connection (``SET SESSION CHARACTERISTICS``) when it opens, so that they hold
whatever peewee does to begin a transaction: peewee 3.14 leaves that to psycopg2's implicit ``BEGIN``, peewee
3.17 and 4 send ``BEGIN`` on an autocommit connection.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import peewee as pw

from vmond.config.database import connect_params
from vmond.config.types import Secret

SERIALIZABLE = "ISOLATION LEVEL SERIALIZABLE, READ WRITE"
SNAPSHOT = "ISOLATION LEVEL REPEATABLE READ, READ ONLY"
RETRY_CODES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
MISSING_DRIVER = ("storage.database is PostgreSQL, but psycopg2 is not installed: install Debian's "
                  "python3-psycopg2 (or pip install 'vmond[postgresql]')")


class PostgresDatabase(pw.PostgresqlDatabase):
    """peewee's PostgreSQL database whose connections start with the characteristics of the thread that opens
    them (:meth:`use`): SERIALIZABLE read-write unless a thread asked otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._characteristics = threading.local()
        super().__init__(*args, **kwargs)

    def use(self, characteristics: str) -> None:
        """This thread's next connections start with *characteristics* (:data:`SERIALIZABLE`, :data:`SNAPSHOT`)."""
        self._characteristics.value = characteristics

    def _initialize_connection(self, conn: Any) -> None:
        characteristics = getattr(self._characteristics, "value", SERIALIZABLE)
        with conn.cursor() as cursor:
            # Our own constants, not input: SET takes no parameters.
            cursor.execute(f"SET SESSION CHARACTERISTICS AS TRANSACTION {characteristics}")
        if not conn.autocommit:  # peewee 3.14: psycopg2 opened a transaction for the SET
            conn.commit()


def open_postgres(url: str, password: Secret | None) -> PostgresDatabase:
    """A peewee database for *url* (not connected yet); RuntimeError without psycopg2."""
    if importlib.util.find_spec("psycopg2") is None:  # peewee would only say "driver not installed"
        raise RuntimeError(MISSING_DRIVER)
    params = connect_params(url)
    dbname = params.pop("dbname")
    if password is not None:
        params["password"] = password.reveal()
    params.setdefault("application_name", "vmond")
    params.setdefault("connect_timeout", 10)
    return PostgresDatabase(dbname, autoconnect=True, **params)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg2 error, also when peewee wrapped it (its first argument, or the cause)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        code = getattr(item, "pgcode", None)
        if isinstance(code, str):
            return code
        if isinstance(item, BaseException):
            stack += [item.__cause__, item.__context__, *(a for a in item.args if isinstance(a, BaseException))]
    return None


def worth_retrying(exc: BaseException) -> bool:
    """A serialization failure or a deadlock: the transaction was rolled back and may simply run again."""
    return sqlstate(exc) in RETRY_CODES


def connection_lost(db: pw.Database) -> bool:
    """This thread's connection is broken (the server restarted, the backend was terminated, the network)."""
    if db.is_closed():
        return False
    conn = db.connection()
    return bool(getattr(conn, "closed", 0))


def drop_connection(db: pw.Database) -> None:
    """Forget this thread's (broken) connection; the next job opens a new one."""
    try:
        db.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail in many ways; it is gone either way
        db._state.reset()  # type: ignore[attr-defined]  # peewee's stub leaves out its connection state
