"""Schedules and snooze in the database (issue 17): whether a mail's event goes on the wall, and what the account
and camera APIs show of a schedule, a manual arm or disarm and a snooze (the changes are in :mod:`.arming`).

An event recorded while its account is not monitored (outside its schedule, or disarmed by hand) gets the flag
``unmonitored``; while its camera is snoozed, ``snoozed``. Either keeps it off the wall (``AlarmEvent.off_wall``)
but stored, listed in the API and sent over MQTT with its flags. Manual arm/disarm and snooze end by themselves:
nothing is cleared at their end, every check compares with the stored end. Each change is on the audit trail.
Synchronous: runs on a database thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import peewee as pw

from vmond.store.models import Account, AuditEntry, Camera, User, utcnow
from vmond.store.scope import EVERY_ACCOUNT, Scope
from vmond.util.schedule import Monitoring, Override, Schedule, monitoring

UNMONITORED, SNOOZED = "unmonitored", "snoozed"
OFF_WALL_FLAGS = (UNMONITORED, SNOOZED)


def account_override(account: Account) -> Override | None:
    if account.override_monitored is None:
        return None
    return Override(bool(account.override_monitored), account.override_until)


def account_monitoring(account: Account, zone: str, at: datetime) -> Monitoring:
    """Whether *account* is monitored at *at* in the site's *zone*, and until when."""
    schedule = Schedule.from_json(account.schedule) if account.schedule is not None else None
    return monitoring(at, schedule, ZoneInfo(zone), account_override(account))


def is_snoozed(camera: Camera, at: datetime) -> bool:
    return camera.snoozed_until is not None and at < camera.snoozed_until


def off_wall_flags(camera: Camera | None, at: datetime, zone: str, is_test: bool) -> list[str]:
    """The flags that keep a new event of *camera* received *at* off the wall (a test mail is never flagged)."""
    if camera is None or is_test:
        return []
    flags = [] if account_monitoring(camera.account, zone, at).monitored else [UNMONITORED]
    return flags + ([SNOOZED] if is_snoozed(camera, at) else [])


# --- the API's view -------------------------------------------------------------------------------------------


def monitoring_dict(account: dict[str, Any], zone: str, at: datetime | None = None) -> dict[str, Any]:
    """``monitoring`` of the account API: ``monitored`` now, ``until`` when (None: no change in sight), ``by``
    what (``schedule``, ``manual`` or ``always``), and the manual arm/disarm that holds, if one does."""
    at = at or utcnow()
    schedule = Schedule.from_json(account["schedule"]) if account.get("schedule") else None
    manual = account.get("manual")
    override = None
    if manual is not None:
        until = datetime.fromisoformat(manual["until"]) if manual["until"] else None
        override = Override(manual["monitored"], until)
        if not override.holds_at(at):
            override = manual = None
    state = monitoring(at, schedule, ZoneInfo(zone), override)
    return {"monitored": state.monitored, "until": None if state.until is None else state.until.isoformat(),
            "by": "manual" if manual else "schedule" if schedule else "always", "manual": manual}


def _manual(account: Account) -> dict[str, Any] | None:
    if account.override_monitored is None:
        return None
    by = User.get_or_none(User.id == account.override_by_id) if account.override_by_id is not None else None
    return {"monitored": bool(account.override_monitored),
            "until": None if account.override_until is None else account.override_until.isoformat(),
            "reason": account.override_reason, "by": None if by is None else by.username}


def account_fields(account: Account) -> dict[str, Any]:
    """What the account API adds for schedules (the web adds ``monitoring``, which needs the site's zone)."""
    return {"schedule": account.schedule, "manual": _manual(account)}


def camera_fields(camera: Camera) -> dict[str, Any]:
    """What the camera API adds for snooze: ``snoozed_until`` only while the snooze lasts."""
    snoozed = is_snoozed(camera, utcnow())
    return {"snoozed": snoozed,
            "snoozed_until": camera.snoozed_until.isoformat() if snoozed and camera.snoozed_until else None,
            "snooze_reason": camera.snooze_reason if snoozed else ""}


def snoozed_count(scope: Scope = EVERY_ACCOUNT, at: datetime | None = None) -> int:
    """How many of *scope*'s cameras are snoozed now (the wall shows it)."""
    query = Camera.select(Camera.id).where(Camera.snoozed_until > (at or utcnow()))
    return int(scope.where(query, Camera.account).count())


def monitoring_log(account_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The account's latest manual arms and disarms, newest first, for its page."""
    entries = (AuditEntry.select(AuditEntry, User).join(User, pw.JOIN.LEFT_OUTER)
               .where(AuditEntry.target_type == "account", AuditEntry.target_id == account_id,
                      AuditEntry.action.in_(["account.arm", "account.disarm"]))
               .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit))
    return [{"at": e.at.isoformat(), "action": e.action.split(".")[1], "until": e.detail.get("until"),
             "reason": e.detail.get("reason", ""), "by": e.user.username if e.user is not None else None}
            for e in entries]
