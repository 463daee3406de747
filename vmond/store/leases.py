"""Leases: what one central node holds at a time (issue 19), decided by the database, by the database's clock.

A node names itself (``central.node``) as the holder. :func:`hold` takes or renews leases in the caller's
transaction: a lease is the caller's if nobody holds it, if the caller already does, or if its holder let it
expire. Expiry is measured by the database's clock, never the nodes' (their clocks may disagree; the database is
the one thing they share). The transaction (SQLite's single writer, PostgreSQL's SERIALIZABLE with retries) makes
taking a lease atomic: two nodes racing for one lease cannot both get it.

Synchronous: the functions run on the database's writer thread (:meth:`vmond.store.db.Database.write`) or, for
:func:`holders`, a reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee as pw

from vmond.store.models import Lease

NODE = "node:"  # node:<name>: held by a node while it is alive
INSTANCE = "instance:"  # instance:<name>: held by the one process running as node <name> (its random token)
DUTY = "duty:"  # duty:<what>: a duty that must run on one node at a time
ADOPT = "adopt:"  # adopt:<name>: a survivor empties a dead node's broker session


def database_now() -> datetime:
    """The database's clock, in UTC (microseconds on PostgreSQL, milliseconds on SQLite)."""
    database: Any = Lease._meta.database
    database = getattr(database, "obj", None) or database  # a peewee Proxy: the database behind it
    if isinstance(database, pw.SqliteDatabase):
        sql = "SELECT strftime('%Y-%m-%dT%H:%M:%f', 'now')"
    else:  # PostgreSQL: the wall clock now, not the transaction's start (a retried transaction starts later)
        sql = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    text = database.execute_sql(sql).fetchone()[0]
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hold(names: Iterable[str], holder: str, ttl: float) -> set[str]:
    """Take or renew each lease of *names* for *holder* until *ttl* seconds from now; returns the names held
    now (the others are held by another node whose lease has not expired)."""
    now = database_now()
    expires = now + timedelta(seconds=ttl)
    held = set()
    for name in names:
        Lease.insert(name=name, holder=holder, expires_at=expires, taken_at=now).on_conflict_ignore().execute()
        taken = (Lease.update(expires_at=expires)
                 .where(Lease.name == name, Lease.holder == holder).execute()
                 or Lease.update(holder=holder, expires_at=expires, taken_at=now)
                 .where(Lease.name == name, Lease.expires_at <= now).execute())
        if taken:
            held.add(name)
    return held


def claim_instance(name: str, token: str, ttl: float, *, force: bool = False) -> str | None:
    """Run as node *name* in the process named by *token*: take ``instance:<name>`` unless another process holds
    it (then return its ``expires_at``, ISO 8601, and take nothing), and keep ``node:<name>`` alive either way
    (a node restarted after a crash keeps its broker session from being adopted meanwhile). *force*: take it
    from the other process (it showed no sign of life)."""
    lease = Lease.get_or_none(Lease.name == INSTANCE + name)
    if not force and lease is not None and lease.holder != token and lease.expires_at > database_now():
        hold([NODE + name], name, ttl)
        return str(lease.expires_at.isoformat())
    if force:
        Lease.delete().where(Lease.name == INSTANCE + name, Lease.holder != token).execute()
    hold([INSTANCE + name], token, ttl)
    hold([NODE + name], name, ttl)
    return None


def renew_node(names: Iterable[str], name: str, token: str, ttl: float) -> set[str] | None:
    """A running node's renewal: its ``instance:<name>`` for *token*, then *names* (``node:<name>`` and the
    duties) for *name*; None, renewing nothing, when another process now holds the instance: it runs under this
    node's name (a second node configured with the same name, or this one was frozen long enough to be
    thought dead)."""
    if not hold([INSTANCE + name], token, ttl):
        return None
    return hold(names, name, ttl)


def release(names: Iterable[str], holder: str) -> int:
    """Give up *holder*'s leases of *names* (others' are left alone); returns how many it held."""
    return int(Lease.delete().where(Lease.name.in_(list(names)), Lease.holder == holder).execute())


def holder(name: str) -> str | None:
    """Who holds lease *name* now (None: nobody, or it expired)."""
    lease = Lease.get_or_none(Lease.name == name)
    return lease.holder if lease is not None and lease.expires_at > database_now() else None


def holders(prefix: str = "") -> dict[str, dict[str, Any]]:
    """The live leases whose name starts with *prefix*: name -> ``{holder, since, expires_at}`` (ISO 8601)."""
    now = database_now()
    return {lease.name: {"holder": lease.holder, "since": lease.taken_at.isoformat(),
                         "expires_at": lease.expires_at.isoformat()}
            for lease in Lease.select().where(Lease.name.startswith(prefix), Lease.expires_at > now)
            .order_by(Lease.name)}


def expired_nodes(prefix: str = NODE) -> list[str]:
    """The nodes whose ``node:`` lease has expired (they died without leaving): their names, oldest first."""
    now = database_now()
    return [lease.name[len(prefix):] for lease in Lease.select().where(Lease.name.startswith(prefix),
                                                                         Lease.expires_at <= now)
            .order_by(Lease.expires_at)]


def live_nodes(prefix: str = NODE) -> list[str]:
    """The nodes alive now (their ``node:`` lease not expired)."""
    return [name[len(prefix):] for name in holders(prefix)]


def leave(lease: str, holder: str, prefix: str = NODE) -> bool:
    """A node's clean leave: give up its node lease *lease* if another node is alive (a live lease under
    *prefix* held by someone else), in one transaction, so that of two nodes leaving at once one stays (the last
    node keeps its lease, and its broker session keeps the sites' messages until a node is back)."""
    others = holders(prefix)
    others.pop(lease, None)
    if not any(entry["holder"] != holder for entry in others.values()):
        return False
    release([lease], holder)
    return True


def take_adoption(dead: str, holder: str, ttl: float) -> bool:
    """Take ``adopt:<dead>`` for *holder* if node *dead*'s lease is still expired (one transaction: a node that
    came back meanwhile is not adopted)."""
    node = Lease.get_or_none(Lease.name == NODE + dead)
    if node is None or node.expires_at > database_now():
        return False
    return bool(hold([ADOPT + dead], holder, ttl))


def adopted(dead: str, holder: str, erased: bool) -> None:
    """After an adoption: release ``adopt:<dead>``; when the session was erased, forget the dead node too (unless
    it came back meanwhile and holds its lease again)."""
    release([ADOPT + dead], holder)
    if erased:
        now = database_now()
        Lease.delete().where(Lease.name.in_([NODE + dead, INSTANCE + dead]), Lease.expires_at <= now).execute()


def abandon(lease: str, holder: str) -> None:
    """A node that gave its node lease up to leave but could not (its session is still at the broker): the lease
    back, expired, so a survivor adopts the session as a dead node's."""
    now = database_now()
    Lease.delete().where(Lease.name == lease).execute()
    Lease.insert(name=lease, holder=holder, expires_at=now, taken_at=now).execute()
