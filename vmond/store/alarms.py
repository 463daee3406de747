"""Alarm tickets: raised from an event, acknowledged by the guard who handles them, noted, resolved.

Every change writes an audit entry, queues an ``alarms`` message for the central station in the same transaction
(when MQTT is on) and announces ``alarm.created`` / ``alarm.updated`` to the dashboards, all through its *change*
(see :mod:`vmond.store.changes`). Synchronous: run on a database thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import peewee as pw

from vmond.store import remoteby
from vmond.store.actionplans import present_steps, steps_for, tick
from vmond.store.alarmtrail import worded
from vmond.store.changes import Change
from vmond.store.events import EventNotFound, StatusConflict, get_event, report
from vmond.store.models import (
    Account,
    Alarm,
    AlarmEvent,
    AlarmNote,
    AuditEntry,
    Camera,
    Contact,
    Media,
    User,
    utcnow,
)
from vmond.store.scope import EVERY_ACCOUNT, Scope
from vmond.store.sites import site_ref

STATES = ("open", "acknowledged", "resolved")
RESOLUTION_CODES = {
    "unclassified": "Not classified",
    "false_alarm": "False alarm (nothing found)",
    "authorised_person": "Authorised person on site",
    "animal_or_weather": "Animal, weather or lighting",
    "intruder_police": "Intruder: police dispatched",
    "keyholder_attended": "Keyholder informed or attended",
    "technical_fault": "Technical fault",
    "test": "Test",
    "other": "Other (see text)",
}
# The alarm changes a central station is told about, as ``last_action.action`` of an ``alarms`` message; stations
# parse these words, so they never change (schema/mqtt-messages.json lists them).
PUBLISHED_ACTIONS = ("alarm.open", "alarm.acknowledge", "alarm.note", "alarm.step", "alarm.resolve")
MAX_NOTE = 4000
SNAPSHOT_KIND = "snapshot"  # media vmond took from the camera's stream when the alarm was raised (not camera-sent)


class AlarmNotFound(LookupError):
    pass


class AlarmConflict(ValueError):
    """The alarm is not in a state that allows the action (e.g. a note on a resolved alarm)."""


class AlarmInvalid(ValueError):
    """The request is incomplete; ``fields`` maps the fields to what is wrong (shown next to each on the page)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def _who(user: User | None) -> dict[str, Any] | None:
    return None if user is None else {"id": user.id, "username": user.username}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _users(ids: set[int | None]) -> dict[int | None, User]:
    wanted = [i for i in ids if i is not None]
    return {u.id: u for u in User.select().where(User.id.in_(wanted))} if wanted else {}


def _summary(alarm: Alarm, event: AlarmEvent, users: dict[int | None, User]) -> dict[str, Any]:
    camera = event.camera if event.camera_id is not None else None
    account = camera.account if camera is not None else None
    return {
        "id": alarm.id,
        "event_id": alarm.event_id,
        "state": alarm.state,
        "opened_at": _iso(alarm.opened_at),
        "opened_by": _who(users.get(alarm.opened_by_id)) or remoteby.who(alarm, "opened"),
        "acknowledged_at": _iso(alarm.acknowledged_at),
        "acknowledged_by": _who(users.get(alarm.acknowledged_by_id)) or remoteby.who(alarm, "acknowledged"),
        "resolved_at": _iso(alarm.resolved_at),
        "resolved_by": _who(users.get(alarm.resolved_by_id)) or remoteby.who(alarm, "resolved"),
        "resolution": None if alarm.state != "resolved" else {
            "code": alarm.resolution_code, "label": RESOLUTION_CODES.get(alarm.resolution_code or "", ""),
            "text": alarm.resolution or ""},
        "event_type": event.event_type,
        "received_at": _iso(event.received_at),
        "event_time": _iso(event.event_time),
        "camera": None if camera is None else {"id": camera.id, "name": camera.name},
        "camera_name": event.camera_name,
        "channel": event.channel,
        "account": None if account is None else {"id": account.id, "name": account.name},
        "steps": present_steps(alarm.steps, {k: w for k, u in users.items() if k is not None and (w := _who(u))}),
    } | _site_of(alarm, event)


def _site_of(alarm: Alarm, event: AlarmEvent) -> dict[str, Any]:
    """On a central: where the alarm is (the central's own alarm on a site's ``site_offline``: that site)."""
    site = alarm.site if alarm.site_id is not None else event.site if event.site_id is not None else None
    return {} if site is None else {"site": site_ref(site)}


def _query() -> pw.ModelSelect[Alarm]:
    return (Alarm.select(Alarm, AlarmEvent, Camera, Account)
            .join(AlarmEvent)
            .join(Camera, pw.JOIN.LEFT_OUTER)
            .join(Account, pw.JOIN.LEFT_OUTER))


def _load(alarm_id: int) -> Alarm:
    alarm = _query().where(Alarm.id == alarm_id).first()
    if alarm is None:
        raise AlarmNotFound(alarm_id)
    return alarm


def alarm_of_event(event_id: int) -> int | None:
    alarm = Alarm.get_or_none(Alarm.event == event_id)
    return None if alarm is None else alarm.id


def alarm_summary(alarm_id: int) -> dict[str, Any]:
    alarm = _load(alarm_id)
    users = _users({alarm.opened_by_id, alarm.acknowledged_by_id, alarm.resolved_by_id} | _step_users(alarm))
    return _summary(alarm, alarm.event, users)


def _step_users(alarm: Alarm) -> set[int | None]:
    return {step.get("done_by") for step in alarm.steps or []}


def alarm_detail(domain: str, alarm_id: int) -> dict[str, Any]:
    """The alarm with its event, the account and its contacts (call order), notes and the whole audit trail."""
    alarm = _load(alarm_id)
    return _detail(alarm, get_event(domain, alarm.event_id))


def _live_detail(alarm_id: int) -> dict[str, Any]:
    """What dashboards are sent when a note is added: the detail without its event, notes and audit trail."""
    return {k: v for k, v in _detail(_load(alarm_id), None).items() if k not in ("notes", "audit")}


def _detail(alarm: Alarm, event_dict: dict[str, Any] | None) -> dict[str, Any]:
    event = alarm.event
    notes = list(AlarmNote.select().where(AlarmNote.alarm == alarm).order_by(AlarmNote.id))
    audit = list(AuditEntry.select().where(
        ((AuditEntry.target_type == "alarm") & (AuditEntry.target_id == alarm.id))
        | ((AuditEntry.target_type == "event") & (AuditEntry.target_id == event.id))).order_by(AuditEntry.id))
    users = _users({alarm.opened_by_id, alarm.acknowledged_by_id, alarm.resolved_by_id} | _step_users(alarm)
                   | {n.author_id for n in notes} | {a.user_id for a in audit}
                   | {a.detail.get("took_over_from") for a in audit if a.action == "alarm.acknowledge"})
    detail = _summary(alarm, event, users)
    camera = event.camera if event.camera_id is not None else None
    account = camera.account if camera is not None else None
    if event_dict is not None:
        detail["event"] = event_dict
    detail["account"] = None if account is None else {
        "id": account.id, "name": account.name, "address": account.address, "notes": account.notes,
        "contacts": [{"name": c.name, "phone": c.phone, "email": c.email, "role": c.role, "priority": c.priority}
                     for c in Contact.select().where(Contact.account == account)
                     .order_by(Contact.priority, Contact.id)],
    }
    detail["notes"] = [{"id": n.id, "author": _who(users.get(n.author_id)), "created_at": _iso(n.created_at),
                        "text": n.text} for n in notes]
    detail["audit"] = worded(audit, users, RESOLUTION_CODES)
    detail["snapshot"] = _snapshot(alarm, audit)
    return detail


def _snapshot(alarm: Alarm, audit: list[AuditEntry]) -> dict[str, Any] | None:
    """The picture taken from the camera's stream when the alarm was raised, or why there is none."""
    media = (Media.select().where(Media.event == alarm.event_id, Media.kind == SNAPSHOT_KIND)
             .order_by(Media.id.desc()).first())
    if media is not None:
        return {"state": "ready", "url": f"/api/alarms/{alarm.id}/snapshot", "taken_at": _iso(media.created_at),
                "width": media.width, "height": media.height}
    failed = [a for a in audit if a.action == "alarm.snapshot_failed"]
    if failed:
        return {"state": "failed", "error": failed[-1].detail.get("error", ""), "at": _iso(failed[-1].at)}
    return None


def list_alarms(state: str = "open", query: str = "", account_id: int | None = None, camera_id: int | None = None,
                since: datetime | None = None, until: datetime | None = None, limit: int = 100,
                scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    """Alarms newest first. ``state`` "open" means not yet resolved (open or acknowledged). Only those of
    *scope*'s accounts."""
    select = scope.where(_query())  # guards limited to accounts
    if state == "open":
        select = select.where(Alarm.state != "resolved")
    elif state != "all":
        select = select.where(Alarm.state == state)
    if query:
        like = f"%{query}%"
        select = select.where(Account.name ** like | Camera.name ** like | AlarmEvent.event_type ** like)
    if account_id is not None:
        select = select.where(Account.id == account_id)
    if camera_id is not None:
        select = select.where(Camera.id == camera_id)
    if since is not None:
        select = select.where(Alarm.opened_at >= since)
    if until is not None:
        select = select.where(Alarm.opened_at < until)
    alarms = list(select.order_by(Alarm.opened_at.desc(), Alarm.id.desc()).limit(limit))
    users = _users({uid for a in alarms for uid in (a.opened_by_id, a.acknowledged_by_id, a.resolved_by_id)}
                   | {uid for a in alarms for uid in _step_users(a)})
    return [_summary(a, a.event, users) for a in alarms]


def _announce(change: Change, summary: dict[str, Any], kind: str = "update") -> None:
    change.announce("alarm.created" if kind == "new" else "alarm.updated", summary, about=("alarm", summary["id"]))


def _changed(alarm_id: int, user_id: int | None, action: str, detail: dict[str, Any], change: Change,
             kind: str = "update") -> dict[str, Any]:
    AuditEntry.create(user=user_id, action=action, target_type="alarm", target_id=alarm_id, detail=detail)
    summary = alarm_summary(alarm_id)
    if action in PUBLISHED_ACTIONS:  # the others (the picture at raising) are for the guards only
        by = _who(User.get_or_none(User.id == user_id)) if user_id is not None else (
            {"id": None, "username": change.remote} if change.remote else None)
        change.queue_alarm(kind, dict(summary, last_action={"action": action, "detail": detail, "by": by}))
    _announce(change, summary, kind)
    return summary


def raise_alarm(domain: str, event_id: int, user_id: int | None, change: Change | None = None
                ) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Open the alarm for an event (once: a second guard pressing "alarm" gets the same one).

    Returns (alarm, event, created)."""
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        raise EventNotFound(event_id)
    existing = Alarm.get_or_none(Alarm.event == event)
    if existing is not None:
        return alarm_summary(existing.id), get_event(domain, event_id), False
    if event.is_test:
        raise StatusConflict("a camera's test mail cannot become an alarm")
    previous = event.status
    event.status = "alarmed"
    event.status_changed_by_id = user_id
    event.status_changed_at = event.updated_at = utcnow()
    event.save()
    alarm = Alarm.create(event=event, opened_by=user_id, steps=_plan_of(event),
                         remote_by={"opened": change.remote} if change and change.remote and user_id is None else {})
    AuditEntry.create(user=user_id, action="event.alarmed", target_type="event", target_id=event_id,
                      detail={"from": previous, "to": "alarmed", "alarm_id": alarm.id})
    event_dict = get_event(domain, event_id)
    change = change or Change()
    report(change, "update", event_dict)
    summary = _changed(alarm.id, user_id, "alarm.open", {"event_id": event_id}, change, kind="new")
    return summary, event_dict, True


def _plan_of(event: AlarmEvent) -> list[dict[str, Any]]:
    """The steps of the account's action plan that apply to *event*, to be copied onto its alarm."""
    camera = event.camera if event.camera_id is not None else None
    if camera is None:
        return []
    return steps_for(camera.account.action_plan, event.kind)


def acknowledge(alarm_id: int, user_id: int | None, change: Change | None = None) -> dict[str, Any]:
    """The guard takes the alarm: everyone sees who is handling it. Taking it over from another guard is allowed
    (a shift ends), and recorded. *user_id* None: a central station's operator takes it (always recorded: the
    audit entry names who, see :mod:`vmond.store.remote`)."""
    alarm = _load(alarm_id)
    if alarm.state == "resolved":
        raise AlarmConflict("the alarm is resolved")
    change = change or Change()
    if user_id is not None and alarm.acknowledged_by_id == user_id:
        summary = alarm_summary(alarm_id)
        _announce(change, summary)  # nothing changed, but the guard's screen is brought up to date all the same
        return summary
    previous = alarm.acknowledged_by_id
    alarm.state = "acknowledged"
    alarm.acknowledged_by_id = user_id
    alarm.acknowledged_at = utcnow()
    remoteby.mark(alarm, "acknowledged", user_id, change)
    alarm.save()
    return _changed(alarm_id, user_id, "alarm.acknowledge", {"took_over_from": previous} if previous else {}, change)


def check_note(text: str) -> str:
    """The note's text as kept (stripped); ValueError for an empty or too long one."""
    text = text.strip()
    if not text:
        raise ValueError("the note is empty")
    if len(text) > MAX_NOTE:
        raise ValueError(f"a note is at most {MAX_NOTE} characters")
    return text


def add_note(alarm_id: int, user_id: int | None, text: str, change: Change | None = None) -> dict[str, Any]:
    text = check_note(text)
    alarm = _load(alarm_id)
    note = AlarmNote.create(alarm=alarm, author=user_id, text=text)
    change = change or Change()
    _changed(alarm_id, user_id, "alarm.note", {"note_id": note.id, "text": text[:200]}, change)
    _announce(change, _live_detail(alarm_id))  # with the account and its contacts, as the alarm page shows them
    author = User.get_or_none(User.id == user_id)
    return {"id": note.id, "alarm_id": alarm_id, "author": _who(author), "created_at": _iso(note.created_at),
            "text": note.text}


def check_resolution(code: str, text: str, require_code: bool) -> tuple[str, str]:
    """The outcome as kept (code, stripped text); :class:`AlarmInvalid` naming the field that is wrong."""
    if require_code and code in ("", "unclassified"):
        raise AlarmInvalid({"code": "required"})
    code = code or "unclassified"
    if code not in RESOLUTION_CODES:
        raise AlarmInvalid({"code": f"resolution code must be one of {', '.join(RESOLUTION_CODES)}"})
    text = text.strip()
    if code == "other" and not text:
        raise AlarmInvalid({"text": "required: say what happened when the outcome is 'other'"})
    return code, text


def resolve(alarm_id: int, user_id: int | None, code: str, text: str, change: Change | None = None,
            require_code: bool = False) -> dict[str, Any]:
    """Close the alarm with an outcome. *require_code* (``alarms.require_resolution_code``): without a code,
    or with "unclassified", the answer is :class:`AlarmInvalid` naming the ``code`` field."""
    alarm = _load(alarm_id)
    if alarm.state == "resolved":
        raise AlarmConflict("the alarm is resolved already")
    code, text = check_resolution(code, text, require_code)
    alarm.state = "resolved"
    alarm.resolved_by_id = user_id
    alarm.resolved_at = utcnow()
    remoteby.mark(alarm, "resolved", user_id, change)
    alarm.resolution_code = code
    alarm.resolution = text[:MAX_NOTE]
    alarm.save()
    return _changed(alarm_id, user_id, "alarm.resolve", {"code": code, "text": text[:200]}, change or Change())



# --- action plan steps (``accounts[].action_plan``, copied onto the alarm when it was raised) --------------------


def tick_step(alarm_id: int, user_id: int | None, n: int, change: Change | None = None) -> dict[str, Any]:
    """Step *n* of the alarm's action plan is done (by *user_id*, or without one by the change's remote operator,
    now). Ticking a done step again changes nothing; a resolved alarm's steps stay as they were."""
    alarm = _load(alarm_id)
    if alarm.state == "resolved":
        raise AlarmConflict("the alarm is resolved")
    steps = tick(alarm.steps or [], n, user_id, utcnow(), change.remote if change and user_id is None else None)
    if steps is None:
        raise AlarmNotFound(f"the alarm has no step {n}")
    if steps == alarm.steps:
        return alarm_summary(alarm_id)
    alarm.steps = steps
    alarm.save()
    text = next(s["text"] for s in steps if s["n"] == n)
    return _changed(alarm_id, user_id, "alarm.step", {"n": n, "text": text[:200]}, change or Change())


# --- the picture at raising (``live.snapshot_on_alarm``): written by vmond.live, after the alarm is raised --------


def attach_alarm_snapshot(alarm_id: int, path: str, *, sha256: str, size: int, width: int, height: int,
                          taken_at: datetime, change: Change | None = None) -> dict[str, Any] | None:
    """Keep the picture at *path* (under the media directory) as the alarm's picture at raising: media of the
    alarm's event of kind ``snapshot`` (so retention treats it as the event's other media; the Event's
    ``images`` and clips leave it out, since the camera did not send it). None if the alarm is gone."""
    alarm = Alarm.get_or_none(Alarm.id == alarm_id)
    if alarm is None:
        return None
    Media.create(event=alarm.event_id, kind=SNAPSHOT_KIND, position=-2, path=path, content_type="image/jpeg",
                 sha256=sha256, bytes=size, width=width, height=height, created_at=taken_at,
                 original_name=f"alarm-{alarm_id}-at-raising.jpg")
    return _changed(alarm_id, None, "alarm.snapshot", {"taken_at": _iso(taken_at)}, change or Change())


def record_alarm_snapshot_failure(alarm_id: int, error: str, change: Change | None = None) -> dict[str, Any] | None:
    """No picture at raising: the reason goes on the alarm's audit trail, where the guard sees it."""
    if Alarm.get_or_none(Alarm.id == alarm_id) is None:
        return None
    return _changed(alarm_id, None, "alarm.snapshot_failed", {"error": error[:300]}, change or Change())


def alarm_snapshot_file(alarm_id: int) -> dict[str, Any] | None:
    """Path and size of the alarm's picture at raising, if it has one."""
    alarm = Alarm.get_or_none(Alarm.id == alarm_id)
    if alarm is None:
        return None
    media = (Media.select().where(Media.event == alarm.event_id, Media.kind == SNAPSHOT_KIND)
             .order_by(Media.id.desc()).first())
    return None if media is None else {"path": media.path, "content_type": media.content_type}


# --- a guard's own shift (issue 16): the alarms they resolved lately, the one part of the history a guard sees ----


def resolved_by_user(user_id: int, since: datetime, limit: int = 100, scope: Scope = EVERY_ACCOUNT
                     ) -> list[dict[str, Any]]:
    """The alarms *user_id* resolved at or after *since* (of *scope*'s accounts), the latest resolution first."""
    alarms = list(scope.where(_query())
                  .where(Alarm.state == "resolved", Alarm.resolved_by == user_id, Alarm.resolved_at >= since)
                  .order_by(Alarm.resolved_at.desc(), Alarm.id.desc()).limit(limit))
    users = _users({uid for a in alarms for uid in (a.opened_by_id, a.acknowledged_by_id, a.resolved_by_id)})
    return [_summary(a, a.event, users) for a in alarms]
