"""Notifications (issue 17): who is told about what, written as rows in the transaction of the change itself.

Rules (``notify.on``): ``alarm_raised`` (a guard raised an alarm), ``supervision`` (vmond raised a supervision event:
a silent camera, the appliance's own trouble) and ``unhandled`` (an event still untouched ``notify.escalate_after``
after it was received). Each goes to every ``notify.targets`` entry (the duty targets); ``alarm_raised`` and
``supervision`` also to the contacts of the event's account that have a ``notify_url`` (keyholders). A camera's
test mail, and an event flagged ``unmonitored`` or ``snoozed``, notify nobody.

Rows are queued by :class:`vmond.store.changes.Change` (``queue_alarm("new")``, ``queue_event("new")`` of a
supervision kind) and by :func:`escalate_unhandled` (run through the seam by the sender's periodic check, after
the read :func:`unhandled_due` found any), so a
committed change always has its rows, whether or not MQTT is on. The sender (:mod:`vmond.notify`) takes the due
rows, and records each outcome here, on the event's audit trail (which the alarm's trail includes).

Delivery is at least once: a row is marked sent only after Apprise returned, so a crash in between sends it again
after the restart, with the same ``Ref:`` (the row's ``uid``) in the message. Synchronous: run on a database thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from vmond.store.models import Account, Alarm, AlarmEvent, AuditEntry, Camera, Contact, Notification, utcnow
from vmond.util.kinds import SUPERVISION_KINDS

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.store.changes import Change

QUIET_FLAGS = frozenset({"unmonitored", "snoozed"})  # events nobody is to be called about
RULE_WORDS = {"alarm_raised": "alarm raised", "unhandled": "unhandled", "supervision": "supervision"}
MAX_ERROR = 300
# How far back the unhandled check looks: events that passed their escalation while vmond was stopped are still
# notified after a restart, older ones are not (a dashboard left unwatched for a week does not call twice over).
UNHANDLED_LOOKBACK = timedelta(hours=6)
UNHANDLED_BATCH = 100
UNHANDLED_ONE_BY_ONE = 5  # events falling due together told one by one; the rest in one message per target
GROUPED_LISTED = 10  # events named in that message
GROUPED = "grouped"  # the state of an event's row told in a grouped message (never sent itself)


@dataclass(frozen=True)
class NotifyRules:
    """``notify:`` as the store needs it."""

    on: frozenset[str]
    targets: tuple[str, ...]  # notify.targets names
    escalate_after: float
    site: str  # site.name, for the title
    public_url: str | None = None  # web.public_url: the message links to the alarm or event
    zone: str = "UTC"  # site.timezone: a keyholder reads the time as the clocks on site show it

    @classmethod
    def from_config(cls, config: Config) -> NotifyRules:
        return cls(frozenset(config.notify.on), tuple(t.name for t in config.notify.targets),
                   config.notify.escalate_after, config.site.name, config.web.public_url, config.site.timezone)


def _local(value: datetime, zone: str) -> str:
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _notifiable(event: AlarmEvent) -> bool:
    return not event.is_test and not (set(event.flags or []) & QUIET_FLAGS)


def _place(event: AlarmEvent) -> tuple[Camera | None, Account | None, str]:
    """The event's camera and account, and where it happened in words: "Front Door (Demo Customer)"."""
    camera = Camera.get_or_none(Camera.id == event.camera_id) if event.camera_id is not None else None
    account = Account.get_or_none(Account.id == camera.account_id) if camera is not None else None
    where = camera.name if camera is not None else "the appliance"
    return camera, account, where if account is None else f"{where} ({account.name})"


def _message(rules: NotifyRules, rule: str, event: AlarmEvent, alarm_id: int | None) -> tuple[str, str]:
    camera, account, where = _place(event)
    heading = {"alarm_raised": "Alarm", "unhandled": "Unhandled event",
               "supervision": "Supervision"}.get(rule, rule)
    title = f"{rules.site}: {heading}: {event.kind.replace('_', ' ')} at {where}"
    lines = [f"{heading}: {event.event_type or event.kind}",
             f"Camera: {camera.name if camera is not None else '-'}",
             f"Account: {account.name if account is not None else '-'}",
             f"Received: {_local(event.received_at, rules.zone)}",
             f"Kind: {event.kind}, priority {event.priority}"]
    if event.subject:
        lines.append(f"Subject: {event.subject[:200]}")
    if rules.public_url is not None:
        path = f"/alarms/{alarm_id}" if alarm_id is not None else f"/events/{event.id}"
        lines.append(f"Link: {rules.public_url}{path}")
    return title, "\n".join(lines)


def _recipients(rules: NotifyRules, event: AlarmEvent, rule: str) -> list[tuple[str, str | None]]:
    """(target, url): the duty targets by name (their URL stays in the configuration), then the keyholders, who
    are told of an alarm or their camera's supervision event, not of an event the guards have yet to look at."""
    recipients: list[tuple[str, str | None]] = [(name, None) for name in rules.targets]
    if event.camera_id is not None and rule != "unhandled":
        contacts = (Contact.select().join(Camera, on=(Camera.account == Contact.account))
                    .where(Camera.id == event.camera_id, Contact.notify_url.is_null(False))
                    .order_by(Contact.priority, Contact.id))
        recipients += [(f"contact {c.name}", c.notify_url) for c in contacts]
    return recipients


def queue(rules: NotifyRules, rule: str, event_id: int, alarm_id: int | None = None) -> int:
    """Write the rows *rule* asks for about event *event_id* (inside the caller's transaction); how many."""
    if rule not in rules.on:
        return 0
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None or not _notifiable(event):
        return 0
    recipients = _recipients(rules, event, rule)
    if not recipients:
        return 0
    title, body = _message(rules, rule, event, alarm_id)
    now = utcnow()
    for target, url in recipients:
        uid = f"n-{uuid.uuid4().hex[:16]}"
        Notification.create(uid=uid, event=event_id, alarm=alarm_id, rule=rule, target=target, url=url,
                            title=title, body=f"{body}\nRef: {uid}", next_at=now, created_at=now)
    return len(recipients)


def queue_for_alarm(rules: NotifyRules, alarm: dict[str, Any]) -> int:
    """An alarm was raised (``alarm_raised``)."""
    return queue(rules, "alarm_raised", alarm["event_id"], alarm["id"])


def queue_for_event(rules: NotifyRules, event: dict[str, Any]) -> int:
    """A new event: a supervision kind notifies (``supervision``); a camera's own events wait for a guard."""
    if event.get("kind") not in SUPERVISION_KINDS:
        return 0
    return queue(rules, "supervision", event["id"])


def unhandled_due(rules: NotifyRules, after_id: int | None) -> tuple[list[int], int]:
    """Events to notify as ``unhandled`` now, looked at in id (commit) order after event *after_id*: those
    received at least ``escalate_after`` ago that are still active, not a test and not notified as unhandled
    yet. Returns their ids and the id looked at up to, the caller's next *after_id*; each event is looked at once,
    so a flood of events nobody is to be told about never holds up the next. The first call (None) starts at
    the events received within :data:`UNHANDLED_LOOKBACK` before they fell due. A read: the caller writes the rows
    with :func:`escalate_unhandled` only when there are any."""
    due = utcnow() - timedelta(seconds=rules.escalate_after)
    if after_id is None:
        first = (AlarmEvent.select(AlarmEvent.id).where(AlarmEvent.received_at > due - UNHANDLED_LOOKBACK)
                 .order_by(AlarmEvent.id).first())
        last = AlarmEvent.select(AlarmEvent.id).order_by(AlarmEvent.id.desc()).first()
        after_id = first.id - 1 if first is not None else (last.id if last is not None else 0)
    batch = list(AlarmEvent.select(AlarmEvent.id, AlarmEvent.received_at, AlarmEvent.status, AlarmEvent.is_test,
                                   AlarmEvent.kind)
                 .where(AlarmEvent.id > after_id).order_by(AlarmEvent.id).limit(UNHANDLED_BATCH))
    reached, candidates = after_id, []
    for event in batch:
        if event.received_at > due:  # not yet: it (and what came after it) waits for the next look
            break
        reached = event.id
        # A supervision event was told at once (rule supervision): its escalation would tell the same again.
        told = event.kind in SUPERVISION_KINDS and "supervision" in rules.on
        if event.status == "active" and not event.is_test and not told:
            candidates.append(event.id)
    if not candidates:
        return [], reached
    notified = {n.event_id for n in Notification.select(Notification.event_id).where(
        Notification.rule == "unhandled", Notification.event.in_(candidates))}
    return [i for i in candidates if i not in notified], reached


def escalate_unhandled(rules: NotifyRules, event_ids: list[int], change: Change | None = None) -> int:
    """Queue the ``unhandled`` rows of *event_ids* (from :func:`unhandled_due`) that are still due now, in this
    transaction (a guard may have acted since); how many rows.

    A site alarming at once (a storm, a power cut) must not become hundreds of texts: the first
    :data:`UNHANDLED_ONE_BY_ONE` events due together are told one by one, the rest in one message per target."""
    still = []
    for event_id in event_ids:
        event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
        if event is None or event.status != "active" or not _notifiable(event):
            continue
        if Notification.select().where(Notification.event == event_id, Notification.rule == "unhandled").exists():
            continue
        still.append(event)
    queued = 0
    for event in still[:UNHANDLED_ONE_BY_ONE]:
        alarm = Alarm.get_or_none(Alarm.event == event.id)
        queued += queue(rules, "unhandled", event.id, None if alarm is None else alarm.id)
    if "unhandled" in rules.on and still[UNHANDLED_ONE_BY_ONE:]:
        queued += _queue_grouped(rules, still[UNHANDLED_ONE_BY_ONE:])
    if change is not None:
        change.notified += queued
    return queued


def _queue_grouped(rules: NotifyRules, events: list[AlarmEvent]) -> int:
    """One ``unhandled`` message per duty target telling *events* together; each event gets a ``grouped`` row
    (never sent) so that it counts as told."""
    now = utcnow()
    for event in events:
        Notification.create(uid=f"n-{uuid.uuid4().hex[:16]}", event=event.id, rule="unhandled", target="",
                            title="", body="", state=GROUPED, next_at=now, created_at=now)
    listed = "all listed" if len(events) <= GROUPED_LISTED else f"the first {GROUPED_LISTED} listed"
    lines = [f"{len(events)} more events are unhandled, {listed}:"]
    for event in events[:GROUPED_LISTED]:
        lines.append(f"- {event.kind.replace('_', ' ')} at {_place(event)[2]}, received "
                     f"{_local(event.received_at, rules.zone)}")
    if rules.public_url is not None:
        lines.append(f"Link: {rules.public_url}/")
    for target in rules.targets:
        uid = f"n-{uuid.uuid4().hex[:16]}"
        Notification.create(uid=uid, event=events[0].id, rule="unhandled", target=target, url=None,
                            title=f"{rules.site}: {len(events)} more unhandled events", body="\n".join(
                                [*lines, f"Ref: {uid}"]), next_at=now, created_at=now)
    return len(rules.targets)



# --- the sender's side ------------------------------------------------------------------------------------------


def _waiting(skip: list[int], busy: list[str]) -> Any:
    return ((Notification.state == "pending") & Notification.id.not_in(skip or [0])
            & Notification.target.not_in(busy or [""]))


def due(limit: int, skip: list[int], busy: list[str] | None = None) -> list[dict[str, Any]]:
    """Pending rows whose time has come, oldest first, at most one per target, leaving out the rows *skip* (being
    sent, or sent and not yet recorded) and the targets *busy* (a send to them runs still)."""
    taken: list[dict[str, Any]] = []
    busy = list(busy or [])
    while len(taken) < limit:  # one row per target: each look leaves out the targets already taken
        wanted = limit - len(taken)
        rows = list(Notification.select().where(_waiting(skip, busy), Notification.next_at <= utcnow())
                    .order_by(Notification.next_at, Notification.id).limit(wanted))
        for r in rows:
            if r.target not in busy:
                busy.append(r.target)
                taken.append({"id": r.id, "uid": r.uid, "target": r.target, "url": r.url, "title": r.title,
                              "body": r.body, "attempts": r.attempts, "rule": r.rule, "event_id": r.event_id})
        if len(rows) < wanted:  # no more due rows
            break
    return taken


def next_due(skip: list[int], busy: list[str] | None = None) -> datetime | None:
    """When the next pending row falls due, leaving out *skip* and the targets *busy* (as :func:`due`)."""
    row = (Notification.select(Notification.next_at).where(_waiting(skip, list(busy or [])))
           .order_by(Notification.next_at).first())
    return None if row is None else row.next_at


def _trail(row: Notification, action: str, detail: dict[str, Any]) -> None:
    AuditEntry.create(action=action, target_type="event", target_id=row.event_id,
                      detail={"target": row.target, "rule": row.rule, "ref": row.uid, "attempts": row.attempts,
                              **detail})


def sent(row_id: int, change: Change | None = None) -> None:
    """Apprise took it: the row is done, and the event's (so the alarm's) audit trail says so."""
    row = Notification.get_or_none(Notification.id == row_id)
    if row is None or row.state != "pending":
        return
    row.state, row.sent_at, row.attempts = "sent", utcnow(), row.attempts + 1
    row.save()
    _trail(row, "notification.sent", {})


def failed(row_id: int, error: str, retry_in: float | None, change: Change | None = None) -> None:
    """One attempt failed: try again in *retry_in* seconds, or (None) give up; the trail says why, at the first
    failure and when giving up (not at every retry)."""
    row = Notification.get_or_none(Notification.id == row_id)
    if row is None or row.state != "pending":
        return
    row.attempts += 1
    row.last_error = error[:MAX_ERROR]
    if retry_in is None:
        row.state = "failed"
        _trail(row, "notification.failed", {"error": row.last_error})
    else:
        row.next_at = utcnow() + timedelta(seconds=retry_in)
        if row.attempts == 1:
            _trail(row, "notification.retrying", {"error": row.last_error, "retry_in": round(retry_in)})
    row.save()


def pending_count() -> int:
    return Notification.select().where(Notification.state == "pending").count()


def give_up_beyond(max_pending: int, change: Change | None = None) -> int:
    """Bound the pending rows: beyond *max_pending*, the oldest fail (on their trail) rather than pile up."""
    total = Notification.select().where(Notification.state == "pending").count()
    if total <= max_pending:
        return 0
    rows = list(Notification.select().where(Notification.state == "pending")
                .order_by(Notification.id).limit(total - max_pending))
    for row in rows:
        row.state, row.last_error = "failed", "too many notifications waiting; the oldest were given up"
        row.save()
        _trail(row, "notification.failed", {"error": row.last_error})
    return len(rows)


def stats() -> dict[str, int]:
    """How many rows are pending, sent and failed (for /api/health)."""
    counts = {"pending": 0, "sent": 0, "failed": 0}
    for state in counts:
        counts[state] = Notification.select().where(Notification.state == state).count()
    return counts
