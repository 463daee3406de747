"""Supervision in the database: cameras that fell silent and the appliance's own trouble, raised and closed as
ordinary events of a supervision kind (:data:`vmond.util.kinds.SUPERVISION_KINDS`).

A supervised condition that is present has one row in ``supervision_condition`` (its ``subject`` is unique:
``camera:<id>`` for a silent camera, the kind for the appliance's own conditions, ``site:<site id>`` on a central
station for a site offline or silent: :func:`check_sites`) pointing at the event raised for it. Raising writes the
event, the row, an audit entry and the MQTT ``new`` message in one transaction and announces ``event.created``; so
a supervision event is on the wall, over MQTT and on the audit trail like a camera's.

Closing (the camera mailed again, the disk has room again ...) deletes the row and says why on the event's audit
trail (``condition.cleared``), flags the event ``cleared`` and, if it is still on the wall untouched, dismisses
it by the system (``event.dismissed`` with ``by`` null). An event a guard has turned into an alarm stays an alarm:
the alarm is worked and resolved as any other, its trail now telling that the condition ended.

Silence is counted from the camera's stored last mail (alarm or test mail) or, for a camera that never mailed, from
``camera.supervised_since`` (set when supervision began for it): the clock is in the database, so a restart
neither forgets a silence nor starts counting again. Functions run on a database thread; the ``*_due`` readers
let the watcher write only when something changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from vmond.config.schema import MAX_SILENCE, MIN_SILENCE
from vmond.config.types import format_duration, parse_duration
from vmond.store.changes import Change
from vmond.store.models import Account, AlarmEvent, AuditEntry, Camera, Site, SupervisionCondition, utcnow
from vmond.store.monitoring import off_wall_flags
from vmond.store.prepared import Prepared, slot
from vmond.store.sites import announce_site
from vmond.util.kinds import priority_of

CLEARED = "cleared"  # the flag of a supervision event whose condition ended


def effective_silence(own: float | None, default: float | None) -> float | None:
    """A camera's silence limit in seconds: its own (0: never supervised), else ``supervision.max_silence``."""
    limit = default if own is None else own
    return limit or None


def parse_max_silence(value: object) -> float | None:
    """A camera's ``max_silence`` as the API takes it: seconds or a duration (``"12h"``), ``"off"`` or 0 (never
    supervised), or None (``supervision.max_silence``); ValueError with the reason otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "off":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError('must be seconds, a duration such as "12h", "off" or null')
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(str(exc)) from None
    if seconds != 0 and not MIN_SILENCE <= seconds <= MAX_SILENCE:
        raise ValueError(f"must lie between {format_duration(MIN_SILENCE)} and {format_duration(MAX_SILENCE)}, "
                         'or be "off" or null')
    return seconds


def camera_subject(camera_id: int) -> str:
    return f"camera:{camera_id}"


# --- raising and closing ------------------------------------------------------------------------------------------


def _event_dict(domain: str, event_id: int) -> dict[str, Any]:
    from vmond.store.events import get_event  # events.py calls into this module: imported when used

    return get_event(domain, event_id)


def _raise(domain: str, subject: str, kind: str, camera: Camera | None, title: str, text: str,
           priorities: Mapping[str, int] | None, now: datetime, change: Change | None,
           detail: dict[str, Any], zone: str = "UTC", site: Site | None = None) -> dict[str, Any]:
    from vmond.store.events import report

    account = camera.account.priorities if camera is not None else None
    # A camera's silence is flagged like its mails: off the wall (and told nobody) while its account is not
    # monitored or the camera is snoozed.
    held = off_wall_flags(camera, now, zone, False)
    event = AlarmEvent.create(camera=camera, received_at=now, updated_at=now, event_time=now, event_type=title,
                              subject=text, body_excerpt="", kind=kind, priority=priority_of(kind, priorities, account),
                              flags=held, off_wall=bool(held), site=site)  # a central's own: remote_id NULL
    SupervisionCondition.create(subject=subject, kind=kind, camera=camera, event=event, since=now)
    AuditEntry.create(action="condition.raised", target_type="event", target_id=event.id,
                      detail={"kind": kind, "text": text, **detail})
    raised = _event_dict(domain, event.id)
    report(change or Change(), "new", raised)
    return raised


def _close(domain: str, condition: SupervisionCondition, reason: str, now: datetime, change: Change | None
           ) -> dict[str, Any]:
    from vmond.store.events import report

    change = change or Change()
    event = AlarmEvent.get_by_id(condition.event_id)
    condition.delete_instance()
    AuditEntry.create(action="condition.cleared", target_type="event", target_id=event.id,
                      detail={"kind": condition.kind, "reason": reason})
    event.flags = sorted({*(event.flags or []), CLEARED})
    event.updated_at = now
    dismissed = event.status == "active"
    if dismissed:  # off the wall by the system; an alarm raised from it stays open
        event.status = "dismissed"
        event.status_changed_by_id = None
        event.status_changed_at = now
    event.save()
    closed = _event_dict(domain, event.id)
    if dismissed:
        change.announce("event.dismissed", {**closed, "by": None}, about=("event", event.id))
        change.queue_event("update", closed)
    else:
        report(change, "update", closed)
    return closed


def end_camera_silence(domain: str, camera: Camera, at: datetime, change: Change | None = None) -> None:
    """The camera mailed (in the caller's transaction, the mail's own): its silence event, if any, is closed."""
    condition = _CONDITION.first(subject=camera_subject(camera.id))
    if condition is not None:
        _close(domain, condition, "the camera mailed again", at, change)


# Asked for every camera mail: prepared once (vmond.store.prepared).
_CONDITION = Prepared(SupervisionCondition, lambda: SupervisionCondition.select().where(
    SupervisionCondition.subject == slot("subject", SupervisionCondition.subject)).limit(1))


def set_condition(domain: str, kind: str, present: bool, title: str, text: str,
                  priorities: Mapping[str, int] | None = None, change: Change | None = None,
                  now: datetime | None = None) -> dict[str, Any] | None:
    """An appliance condition (``disk_low``, ``mqtt_down`` ...) is present or not: raise its event when it
    appears, close it when it ends (*text* says why). Returns the event changed, None when nothing changed."""
    now = now or utcnow()
    condition = SupervisionCondition.get_or_none(SupervisionCondition.subject == kind)
    if present and condition is None:
        return _raise(domain, kind, kind, None, title, text, priorities, now, change, {})
    if not present and condition is not None:
        return _close(domain, condition, text, now, change)
    return None


def open_conditions() -> dict[str, int]:
    """The subjects of the conditions present now, with their events' ids."""
    return {c.subject: c.event_id for c in SupervisionCondition.select()}


# --- silent cameras -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    camera: Camera
    action: str  # start | stop | raise | close
    reason: str = ""


def _silence_steps(default: float | None, now: datetime, zone: str) -> tuple[list[_Step], datetime | None]:
    """What supervising the cameras' silence needs done now, and when it next may (None: never, as things are)."""
    open_ = {c.camera_id: c for c in SupervisionCondition.select().where(SupervisionCondition.camera.is_null(False))}
    # Silences raised while the camera was snoozed or its account not monitored: off the wall, told nobody.
    held = {c.camera_id for c in SupervisionCondition.select(SupervisionCondition.camera_id).join(AlarmEvent)
            .where(SupervisionCondition.camera.is_null(False), AlarmEvent.off_wall == True,  # noqa: E712
                   AlarmEvent.status == "active")}
    steps: list[_Step] = []
    next_due: datetime | None = None
    for camera in Camera.select(Camera, Account).join(Account).order_by(Camera.id):
        limit = effective_silence(camera.max_silence, default) if camera.active else None
        condition = open_.get(camera.id)
        if limit is None:
            if camera.supervised_since is not None:
                steps.append(_Step(camera, "stop"))
            if condition is not None:
                steps.append(_Step(camera, "close", "the camera was retired" if not camera.active
                                   else "supervision of its silence was turned off"))
            continue
        if camera.supervised_since is None:
            steps.append(_Step(camera, "start"))
        due = (camera.last_mail_at or camera.supervised_since or now) + timedelta(seconds=limit)
        if condition is None and due <= now:
            steps.append(_Step(camera, "raise"))
        elif condition is not None and due > now:  # its max_silence was raised above the silence so far
            steps.append(_Step(camera, "close", "its max_silence is no longer exceeded"))
        elif condition is not None and camera.id in held and not off_wall_flags(camera, now, zone, False):
            # Watched again (snooze or disarm over) and still silent: raised anew, on the wall and told. (Looked
            # at within SILENCE_RECHECK of the hold's end: the watcher reads the cameras at least that often.)
            steps += [_Step(camera, "close", "the camera is watched again and still silent: raised anew"),
                      _Step(camera, "raise")]
        else:
            # Silent now: a mail closes this silence, and the next one is due a limit after that mail at the
            # earliest, so a limit from now is when to look again.
            due = due if condition is None else now + timedelta(seconds=limit)
            next_due = due if next_due is None else min(next_due, due)
    return steps, next_due


def silence_due(default: float | None, now: datetime | None = None, zone: str = "UTC"
                ) -> tuple[bool, datetime | None]:
    """(whether :func:`check_silence` has anything to do now, the next moment a camera may fall silent)."""
    steps, next_due = _silence_steps(default, now or utcnow(), zone)
    return bool(steps), next_due


def check_silence(domain: str, default: float | None, priorities: Mapping[str, int] | None = None,
                  change: Change | None = None, now: datetime | None = None, zone: str = "UTC"
                  ) -> list[dict[str, Any]]:
    """Raise ``camera_silent`` for each camera silent longer than its limit (once per silence), close those whose
    supervision ended, and note when supervision began for a camera; returns the events raised or closed."""
    now = now or utcnow()
    steps, _ = _silence_steps(default, now, zone)
    changed = []
    for step in steps:
        camera = step.camera
        if step.action == "start":
            Camera.update(supervised_since=now).where(Camera.id == camera.id).execute()
            camera.supervised_since = now
        elif step.action == "stop":
            Camera.update(supervised_since=None).where(Camera.id == camera.id).execute()
        elif step.action == "close":
            condition = SupervisionCondition.get(SupervisionCondition.subject == camera_subject(camera.id))
            changed.append(_close(domain, condition, step.reason, now, change))
        else:
            limit = effective_silence(camera.max_silence, default) or 0.0
            last = camera.last_mail_at
            text = (f"No mail from {camera.name} for {format_duration(limit)} or longer; "
                    + (f"its last mail came at {last.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S %Z}" if last
                       else "it has never mailed"))
            changed.append(_raise(domain, camera_subject(camera.id), "camera_silent", camera, "Camera silent",
                                  text, priorities, now, change,
                                  {"camera_id": camera.id, "max_silence": limit,
                                   "last_mail_at": None if last is None else last.isoformat()}, zone))
    return changed


def silence_states(camera_ids: list[int], default: float | None, now: datetime | None = None
                   ) -> dict[int, dict[str, Any]]:
    """For the camera pages and API: each camera's ``max_silence`` (its own setting, ``off`` or null),
    the limit in force, what its silence is counted from, and its open ``camera_silent`` event."""
    now = now or utcnow()
    open_ = {c.camera_id: c.event_id for c in SupervisionCondition.select()
             .where(SupervisionCondition.camera.in_(camera_ids))} if camera_ids else {}
    states = {}
    for camera in Camera.select().where(Camera.id.in_(camera_ids)) if camera_ids else []:
        limit = effective_silence(camera.max_silence, default) if camera.active else None
        since = camera.last_mail_at or camera.supervised_since
        states[camera.id] = {
            "max_silence": "off" if camera.max_silence == 0 else camera.max_silence,
            "limit": limit,
            "counted_from": None if limit is None or since is None else since.isoformat(),
            "silent_event_id": open_.get(camera.id),
        }
    return states


# --- sites, on a central station ------------------------------------------------------------------------------------


def site_subject(key: str) -> str:
    return f"site:{key}"


def _site_steps(silence: float, listening_since: datetime | None, now: datetime
                ) -> tuple[list[tuple[Site, str, str]], datetime | None]:
    """What supervising the sites needs done now (site, raise | close, why) and when a site may next fall silent."""
    open_ = {c.subject: c for c in SupervisionCondition.select()
             .where(SupervisionCondition.subject.startswith("site:"))}
    limit = timedelta(seconds=silence)
    steps: list[tuple[Site, str, str]] = []
    next_due: datetime | None = None
    for site in Site.select().order_by(Site.id):
        condition = open_.get(site_subject(site.key))
        last = site.last_message_at
        if condition is not None:
            # Back: online (or never said otherwise) and a message since it was raised, not older than the limit.
            if site.online is not False and last is not None and last > condition.since and now - last < limit:
                steps.append((site, "close", "the site is online and sends messages again"))
            continue
        if site.online is False:
            steps.append((site, "raise", "offline"))
            continue
        # Silence is what the central could have heard: not while its own link to the broker was down. A site
        # listed in the configuration that never sent anything is silent from when the central began listening.
        if listening_since is None:
            continue
        due = max(last or listening_since, listening_since) + limit
        if due <= now:
            steps.append((site, "raise", "silent"))
        else:
            next_due = due if next_due is None else min(next_due, due)
    return steps, next_due


def sites_due(silence: float, listening_since: datetime | None, now: datetime | None = None
              ) -> tuple[bool, datetime | None]:
    """(whether :func:`check_sites` has anything to do now, the next moment a site may fall silent)."""
    steps, next_due = _site_steps(silence, listening_since, now or utcnow())
    return bool(steps), next_due


def check_sites(domain: str, silence: float, listening_since: datetime | None,
                priorities: Mapping[str, int] | None = None, change: Change | None = None,
                now: datetime | None = None, zone: str = "UTC") -> list[dict[str, Any]]:
    """On a central: raise ``site_offline`` for each site whose ``available`` says offline or that sent nothing
    for *silence* seconds (while the central's link, up since *listening_since*, could hear it), once per loss;
    close it when the site is online and sends again. Returns the events raised or closed."""
    now = now or utcnow()
    steps, _ = _site_steps(silence, listening_since, now)
    changed = []
    for site, action, why in steps:
        if action == "close":
            condition = SupervisionCondition.get(SupervisionCondition.subject == site_subject(site.key))
            changed.append(_close(domain, condition, why, now, change))
        else:
            last = site.last_message_at
            said = (f"its last message came at {last.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S %Z}" if last
                    else "it has sent nothing yet")
            text = (f"{site.name} ({site.key}) is offline: the broker says so (its last will); {said}"
                    if why == "offline" else
                    f"No message from {site.name} ({site.key}) for {format_duration(silence)} or longer; {said}")
            changed.append(_raise(domain, site_subject(site.key), "site_offline", None, "Site offline", text,
                                  priorities, now, change,
                                  {"site": site.key, "why": why, "site_silence": silence,
                                   "last_message_at": None if last is None else last.isoformat()},
                                  zone, site=site))
        announce_site(change, site)
    return changed
