"""Dismissing safely: several events at once, undo for the guard who just dismissed, restore for supervisors, and
the list of dismissed events with who dismissed them and when.

Every change here is a store function for :meth:`vmond.store.changes.Changes.record`: it writes its audit entries,
queues the ``events`` updates for the central station and announces the live messages in one transaction.
Who dismissed an event and when are the event's ``status_changed_by`` / ``status_changed_at`` (kept until its
status changes again); the audit trail keeps every step. Synchronous: run on a database thread.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from vmond.store.changes import Change
from vmond.store.events import EventNotFound, StatusConflict, event_query, get_event, serialize_events, set_status
from vmond.store.models import AlarmEvent, AuditEntry, User, utcnow
from vmond.store.scope import EVERY_ACCOUNT, Scope

MAX_BULK = 200  # events one bulk dismiss may name: the wall shows at most 200
UNDO_WINDOW = 10.0  # seconds in which the guard who dismissed an event may take it back without a supervisor
UNDO_GRACE = 2.0  # on top, for the round trip of a click made in the last moment of the window


class RestoreRefused(PermissionError):
    """Only a supervisor may restore this event (the dismisser's undo window is over, or someone else dismissed
    it)."""


def dismiss_events(domain: str, ids: list[int], user_id: int, change: Change | None = None
                   ) -> tuple[list[int], list[dict[str, Any]]]:
    """Dismiss every active event in *ids* (in one transaction); returns the ids dismissed and the ones skipped,
    each ``{"id", "reason"}`` with reason ``unknown``, ``already_dismissed`` or ``alarmed``."""
    dismissed: list[int] = []
    skipped: list[dict[str, Any]] = []
    for event_id in dict.fromkeys(ids):  # each once, in the order given
        try:
            _, changed = set_status(domain, event_id, "dismissed", user_id, change=change)
        except EventNotFound:
            skipped.append({"id": event_id, "reason": "unknown"})
            continue
        except StatusConflict:
            skipped.append({"id": event_id, "reason": "alarmed"})
            continue
        if changed:
            dismissed.append(event_id)
        else:
            skipped.append({"id": event_id, "reason": "already_dismissed"})
    return dismissed, skipped


def restore_event(domain: str, event_id: int, user_id: int | None, supervisor: bool, change: Change | None = None,
                  now: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Put a dismissed event back on the wall (``active``); returns the event and whether anything changed.

    A supervisor may restore any dismissed event; anyone else only one they dismissed themselves less than
    :data:`UNDO_WINDOW` seconds ago (the wall's undo), else :class:`RestoreRefused`. An event that became an
    alarm is a :class:`StatusConflict`; restoring an active event changes nothing."""
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        raise EventNotFound(event_id)
    if event.status == "active":
        return get_event(domain, event_id), False
    if event.status != "dismissed":
        raise StatusConflict(f"event {event_id} is an alarm; work it on the alarm page")
    now = now or utcnow()
    own_undo = (event.status_changed_by_id == user_id and event.status_changed_at is not None
                and now - event.status_changed_at <= timedelta(seconds=UNDO_WINDOW + UNDO_GRACE))
    if not (supervisor or own_undo):
        raise RestoreRefused(f"only a supervisor may restore event {event_id}: undo is for the guard who "
                             f"dismissed it, within {UNDO_WINDOW:g} seconds")
    dismissed_by = event.status_changed_by_id
    event.status = "active"
    event.status_changed_by_id = user_id
    event.status_changed_at = event.updated_at = now
    event.save()
    AuditEntry.create(user=user_id, action="event.restore", target_type="event", target_id=event_id,
                      detail={"from": "dismissed", "to": "active", "undo": own_undo, "dismissed_by": dismissed_by})
    restored = get_event(domain, event_id)
    user = User.get_or_none(User.id == user_id)
    change = change or Change()
    # event.updated with the status active: every wall puts the card back where the queue has it.
    change.announce("event.updated", {**restored, "by": None if user is None else user.username},
                    about=("event", event_id))
    change.queue_event("update", restored)
    return restored, True


def list_dismissed(domain: str, since: datetime | None = None, until: datetime | None = None, limit: int = 200,
                   scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    """Dismissed events (not a camera's test mails) of *scope*'s accounts, most recently dismissed first, each with
    ``dismissed_at`` and ``dismissed_by`` (``{"id", "username"}``, None when that user is gone); *since*/*until*
    bound the time of dismissal."""
    query = scope.where(event_query()).where(AlarmEvent.status == "dismissed",
                                 AlarmEvent.is_test == False)  # noqa: E712 - peewee expression
    if since is not None:
        query = query.where(AlarmEvent.status_changed_at >= since)
    if until is not None:
        query = query.where(AlarmEvent.status_changed_at < until)
    events = list(query.order_by(AlarmEvent.status_changed_at.desc(), AlarmEvent.id.desc())
                  .limit(limit))
    wanted = {e.status_changed_by_id for e in events if e.status_changed_by_id is not None}
    users = {u.id: u.username for u in User.select(User.id, User.username).where(User.id.in_(list(wanted)))
             } if wanted else {}
    result = []
    for event, item in zip(events, serialize_events(events, domain), strict=True):
        by = event.status_changed_by_id
        item["dismissed_at"] = None if event.status_changed_at is None else event.status_changed_at.isoformat()
        item["dismissed_by"] = {"id": by, "username": users[by]} if by in users else None
        result.append(item)
    return result

