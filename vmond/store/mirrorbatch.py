"""A central station's mirror, a batch at a time (issue 18): the messages that arrived together from the sites,
each mirrored in a savepoint of its own by :mod:`vmond.store.mirror`, and what they changed announced once, in
order, at the batch's end. Synchronous, on the database's writer thread, inside the batch's transaction.

The sites' signs of life (``last_message_at``) from events, alarms and command results are written once per site
at the batch's end (:func:`vmond.store.sites.note_heard`), or handed to the caller to write in a transaction of
its own: on PostgreSQL with several central nodes, the site rows are the rows every node's batches would share,
and a batch holding them until its commit made the other node's batches wait, deadlock and run again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NamedTuple

import peewee as pw

from vmond.store.alarms import alarm_summary
from vmond.store.centralcommands import record_result
from vmond.store.changes import Change
from vmond.store.events import event_query, serialize_events
from vmond.store.mirror import Later, mirror_alarm, mirror_config, mirror_event
from vmond.store.models import AlarmEvent, Site
from vmond.store.sites import announce_site, ensure_site, note_available, note_heard, note_status
from vmond.store.sitevalues import BadMessage

log = logging.getLogger(__name__)


def _announce_batch(later: Later, domain: str, change: Change) -> None:
    """What a batch mirrored, announced in the order it happened, its events read in one query (reading each
    event again for its announcement was a third of the mirror's time)."""
    events = {e["id"]: e for e in serialize_events(list(event_query().where(
        AlarmEvent.id.in_({row_id for _, kind, row_id in later if kind == "event"}))), domain)} if later else {}
    for type_, kind, row_id in later:
        data = events.get(row_id) if kind == "event" else alarm_summary(row_id)
        if data is not None:
            change.announce(type_, data, about=(kind, row_id))


class SiteMessage(NamedTuple):
    site: str  # the site's id, from the topic
    what: str  # the topic after <prefix>/<site>/: events, alarms, config, status, available, commands/result
    body: Any  # the JSON object (available: its text)
    # A retained copy the broker handed over as the central (re)subscribed: mirrored, but not a sign of life now
    # (the site's silence is supervised from its last message: vmond.store.supervision.check_sites).
    retained: bool = False


# The messages whose site's last_message_at the batch moves at its end (status, available and config write the
# site's row anyway, with what they bring).
_SIGNS_OF_LIFE = frozenset({"events", "alarms", "commands/result"})


def mirror_messages(messages: list[SiteMessage], at: datetime, domain: str, names: dict[str, str],
                    change: Change | None = None, heard: dict[str, datetime] | None = None) -> int:
    """Mirror *messages* in order, each in a savepoint of its own: one the mirror cannot take is logged and
    dropped without undoing the others. Returns how many were dropped.

    The sites heard from are noted at the end, in this transaction; with *heard*, they are put in it instead
    (emptied first: a retried attempt starts again) for the caller to note after the commit."""
    dropped = 0
    database = Site._meta.database
    later: Later = []
    alive: dict[str, datetime] = {}
    for message in messages:
        told: Later = []  # kept only once the message's savepoint holds
        try:
            with database.atomic():
                before = _last_heard(message) if message.retained else None
                _mirror_one(message, at, domain, names.get(message.site), change, told)
                if before is not None:
                    _keep_last_heard(before, change)
            later += told
            if message.what in _SIGNS_OF_LIFE and not message.retained:
                alive[message.site] = at
        except (pw.OperationalError, pw.InterfaceError):
            raise  # the database (disk full, busy, its connection lost), not the message: the batch is tried again
        except Exception as exc:  # noqa: BLE001 - whatever a message makes fail, it must not stop the mirror
            dropped += 1
            log.warning("central: site %s's %s message was dropped: %s: %s", message.site, message.what,
                        type(exc).__name__, str(exc)[:200])
    if heard is None:
        note_heard(alive)
    else:
        heard.clear()
        heard.update(alive)
    if change is not None:
        _announce_batch(later, domain, change)
    return dropped


def _mirror_one(message: SiteMessage, at: datetime, domain: str, name: str | None, change: Change | None,
                later: Later) -> None:
    key, what, body = message.site, message.what, message.body
    if what == "available":
        note_available(key, body == "online", at, name, change)
    elif what == "status":
        note_status(key, body, at, name, change)
    elif what == "config":
        mirror_config(key, body, at, name, change)
    elif what == "events":
        mirror_event(key, _part(body, "event"), at, domain, name, change, later)
    elif what == "alarms":
        mirror_alarm(key, _part(body, "alarm"), at, domain, name, change, later)
    elif what == "commands/result":
        ensure_site(key, name)
        record_result(key, body, at, change)


def _last_heard(message: SiteMessage) -> Site | None:
    """The site as last heard from before *message* (None: never, so even a retained copy is a first sign)."""
    site = Site.get_or_none(Site.key == message.site)
    return site if site is not None and site.last_message_at is not None else None


def _keep_last_heard(before: Site, change: Change | None) -> None:
    """Put the site's last message time back to *before*'s after mirroring a retained copy."""
    Site.update(last_message_at=before.last_message_at).where(Site.id == before.id).execute()
    announce_site(change, Site.get_by_id(before.id))


def _part(body: dict[str, Any], name: str) -> dict[str, Any]:
    part = body.get(name)
    if not isinstance(part, dict):
        raise BadMessage(f"no {name} object")
    return part
