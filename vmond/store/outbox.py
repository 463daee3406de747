"""The MQTT outbox: messages for the central station, written in the same transaction as the change they report.

A row leaves only when the broker acknowledged it (PUBACK), so a message survives broker outages and vmond
restarts; rows leave in id order, which is the order the changes happened. On PostgreSQL (a central station's
several nodes queue commands at once) a writer holds an advisory lock from its insert to its commit, so ids are
also the order of the commits: the sender reads on from the last id it handed over and must never find an older
row committed behind it. The outbox is bounded by age and
size: what has to go is logged loudly and counted, never dropped in silence. Synchronous: run on a database
thread (``enqueue`` inside the caller's write transaction).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import peewee as pw

from vmond.store import prepared
from vmond.store.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)


# pg_advisory_xact_lock's key for the outbox ("vmondout"): held until the transaction ends.
OUTBOX_LOCK = 0x766D6F6E646F7574


def enqueue(topic: str, payload: bytes, qos: int = 1, retain: bool = False, event_id: int | None = None) -> int:
    db = OutboxMessage._meta.database
    if isinstance(db, pw.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK,))
    # prepared: one or more rows for each camera mail when MQTT is on
    return prepared.insert(OutboxMessage, topic=topic, payload=payload, qos=qos, retain=retain, event_id=event_id)


def supersede(topic: str) -> int:
    """Remove the undelivered messages on *topic*: a retained message about to be replaced by a newer one. One
    already handed to the broker may still arrive; the newer one follows it, in order."""
    return OutboxMessage.delete().where(OutboxMessage.topic == topic).execute()


def pending(after_id: int = 0, limit: int = 50) -> list[dict[str, Any]]:
    """The oldest undelivered messages after *after_id*, in order."""
    rows = (OutboxMessage.select().where(OutboxMessage.id > after_id).order_by(OutboxMessage.id).limit(limit))
    return [{"id": r.id, "topic": r.topic, "payload": bytes(r.payload), "qos": r.qos, "retain": r.retain,
             "created_at": r.created_at} for r in rows]


def delivered(ids: list[int]) -> int:
    if not ids:
        return 0
    return OutboxMessage.delete().where(OutboxMessage.id.in_(ids)).execute()


def count_attempt(ids: list[int]) -> None:
    if ids:
        OutboxMessage.update(attempts=OutboxMessage.attempts + 1).where(OutboxMessage.id.in_(ids)).execute()


def stats() -> dict[str, Any]:
    """Depth and the age in seconds of the oldest undelivered message (None when empty)."""
    oldest = OutboxMessage.select(OutboxMessage.created_at).order_by(OutboxMessage.id).first()
    return {"depth": OutboxMessage.select().count(),
            "oldest_age_s": None if oldest is None else round((utcnow() - oldest.created_at).total_seconds(), 1)}


def trim(max_rows: int, max_age_s: float) -> int:
    """Drop what is beyond the bounds (oldest first); returns how many went. The caller logs and counts it."""
    dropped = OutboxMessage.delete().where(OutboxMessage.created_at < utcnow() - timedelta(seconds=max_age_s)).execute()
    total = OutboxMessage.select().count()
    if total > max_rows:
        cutoff = OutboxMessage.select(OutboxMessage.id).order_by(OutboxMessage.id).offset(total - max_rows).first()
        if cutoff is not None:
            dropped += OutboxMessage.delete().where(OutboxMessage.id < cutoff.id).execute()
    return dropped
