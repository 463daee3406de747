"""A central station's command applied once, through the seam, as a guard's click would be (issue 18).

:func:`apply_command` runs in one write transaction (``changes.record(apply_command, ...)``): it looks the
command's id up, applies the action with the very store functions the dashboard's handlers call (same checks: a
resolution code required, a resolved alarm left alone ...), stamps the audit entries it wrote with
``{"remote": {"user", "central", "command_id"}}`` (they have no local user; the trail words them "<user> at
<central>"), remembers the id with its result and queues the result on ``<prefix>/<site>/commands/result``. All of
it commits together or not at all, so a command delivered again after a crash is answered, not applied twice.
:func:`answer_refusal` answers a command refused before that (bad signature, wrong site, expired) without
remembering its id: only a signed command may use one up. Synchronous: run on the writer thread.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from vmond.store import outbox
from vmond.store.actionplans import is_done
from vmond.store.alarms import (
    AlarmConflict,
    AlarmInvalid,
    AlarmNotFound,
    acknowledge,
    add_note,
    raise_alarm,
    resolve,
    tick_step,
)
from vmond.store.changes import Change
from vmond.store.commands import FUTURE_SKEW, Command
from vmond.store.dismissals import RestoreRefused, restore_event
from vmond.store.events import EventNotFound, StatusConflict, set_status
from vmond.store.mediaout import queue_media
from vmond.store.models import Alarm, AlarmEvent, AuditEntry, Media, RemoteCommand, User, utcnow

MEDIA_UNAVAILABLE = "MQTT is off: media cannot be published"


class _Refused(Exception):
    """The action is not applied; its reason goes into the result."""


def result_payload(site: str, command_id: str | None, action: str | None, error: str | None,
                   at: datetime) -> bytes:
    """A ``commands/result`` message: ``{"id", "site", "action", "ok", "error", "at"}``."""
    return json.dumps({"id": command_id, "site": site, "action": action, "ok": error is None, "error": error,
                       "at": at.isoformat()}, separators=(",", ":"), ensure_ascii=False).encode()


def _queue_result(change: Change, payload: bytes) -> None:
    if change.topics is not None:
        outbox.enqueue(change.topics.command_results, payload)
        change.queued += 1


def answer_refusal(site: str, command_id: str | None, action: str | None, error: str,
                   change: Change) -> dict[str, Any]:
    """Queue the result of a command refused before it could be applied; its id is not remembered."""
    payload = result_payload(site, command_id, action, error, utcnow())
    _queue_result(change, payload)
    return dict(json.loads(payload))


def apply_command(domain: str, site: str, command: Command, require_code: bool,
                  change: Change) -> tuple[dict[str, Any], bool]:
    """Apply *command* once; returns its result and whether it was new (False: its id was answered before, and
    that first result is queued again)."""
    seen = RemoteCommand.get_or_none(RemoteCommand.command_id == command.id)
    if seen is not None:
        _queue_result(change, seen.result.encode())
        return dict(json.loads(seen.result)), False
    first_entry = (AuditEntry.select(pw.fn.MAX(AuditEntry.id)).scalar() or 0) + 1
    marks = len(change.announcements), change.queued, change.notified
    error: str | None = None
    change.remote = command.who
    try:
        with RemoteCommand._meta.database.atomic():  # a savepoint: a refused action leaves nothing behind
            _apply(domain, command, require_code, change)
    except _Refused as exc:
        error = str(exc)
    except (EventNotFound, AlarmNotFound) as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], str) else _unknown(command)
    except AlarmInvalid as exc:
        error = str(exc)
    except (AlarmConflict, StatusConflict, RestoreRefused, ValueError) as exc:
        error = str(exc)
    if error is not None:  # what the rolled-back action collected is not announced
        del change.announcements[marks[0]:]
        change.queued, change.notified = marks[1], marks[2]
    else:
        _stamp(first_entry, command)
    now = utcnow()
    payload = result_payload(site, command.id, command.action, error, now)
    RemoteCommand.create(command_id=command.id, received_at=now, result=payload.decode())
    _queue_result(change, payload)
    return dict(json.loads(payload)), True


def forget_commands(max_age: float) -> int:
    """Drop remembered ids older than *max_age* seconds plus the future skew allowed: a command stamped that far
    ahead stays valid that much longer, and its id must be remembered until it expires, or a replay applies it
    again."""
    cutoff = utcnow() - timedelta(seconds=max_age) - FUTURE_SKEW
    return int(RemoteCommand.delete().where(RemoteCommand.received_at < cutoff).execute())


def request_media(change: Change, event_id: int, media_ids: list[int]) -> str | None:
    """Publish the event's media (*media_ids*, checked to be the event's) for the central, each file and a
    picture's thumbnail, through the outbox; None when all are queued, else why not (then the command is refused
    and nothing of it goes)."""
    if change.topics is None:
        return MEDIA_UNAVAILABLE
    queued = queue_media(change, media_ids, event_id=event_id)
    if queued.too_large:
        return f"larger than mqtt.max_media_size, not published: {', '.join(map(str, queued.too_large))}"
    return None


def _unknown(command: Command) -> str:
    return f"unknown event {command.event_id}" if command.event_id is not None else f"unknown alarm {command.alarm_id}"


def _stamp(first_entry: int, command: Command) -> None:
    """Say on the audit entries the action wrote who sent it (they have no local user)."""
    for entry in AuditEntry.select().where((AuditEntry.id >= first_entry) & AuditEntry.user.is_null()):
        entry.detail = {**(entry.detail or {}), "remote": command.remote()}
        entry.save()


def _apply(domain: str, command: Command, require_code: bool, change: Change) -> None:
    action, args = command.action, command.args
    if action == "dismiss":
        set_status(domain, _event(command), "dismissed", None, change)
    elif action == "restore":
        restore_event(domain, _event(command), None, True, change)  # a central's operator is a supervisor here
    elif action == "alarm":
        event_id = _event(command)
        existing = Alarm.get_or_none(Alarm.event == event_id)
        if existing is not None:
            _not_resolved(existing)  # raising it again is harmless, as on the dashboard
            return
        raised, _, created = raise_alarm(domain, event_id, None, change)
        if created:  # whoever raises it handles it, as on the dashboard
            acknowledge(raised["id"], None, change)
    elif action == "media":
        _media(command, change)
    else:
        alarm = _alarm(command)
        _not_resolved(alarm)
        if action == "acknowledge":
            if alarm.state == "acknowledged" and not args["take_over"]:
                raise _Refused(f"the alarm is being handled by {_handler(alarm)}; send take_over to take it over")
            acknowledge(alarm.id, None, change)
        elif action == "note":
            add_note(alarm.id, None, args["text"], change)
        elif action == "step":
            _step(alarm, args["n"], args["done"], change)
        elif action == "resolve":
            resolve(alarm.id, None, args["code"], args["text"], change, require_code=require_code)


def _event(command: Command) -> int:
    assert command.event_id is not None
    if AlarmEvent.get_or_none(AlarmEvent.id == command.event_id) is None:
        raise _Refused(_unknown(command))
    return command.event_id


def _alarm(command: Command) -> Alarm:
    """The command's alarm, by its id or by its event's."""
    if command.alarm_id is not None:
        alarm = Alarm.get_or_none(Alarm.id == command.alarm_id)
    else:
        alarm = Alarm.get_or_none(Alarm.event == _event(command))
        if alarm is None:
            raise _Refused(f"event {command.event_id} has no alarm")
    if alarm is None:
        raise _Refused(_unknown(command))
    return alarm


def _not_resolved(alarm: Alarm) -> None:
    if alarm.state == "resolved":
        at = alarm.resolved_at.isoformat() if alarm.resolved_at else "?"
        raise _Refused(f"resolved locally at {at} by {_resolver(alarm)}")


def _resolver(alarm: Alarm) -> str:
    return _name(alarm.resolved_by_id, (alarm.remote_by or {}).get("resolved"))


def _handler(alarm: Alarm) -> str:
    return _name(alarm.acknowledged_by_id, (alarm.remote_by or {}).get("acknowledged"))


def _name(user_id: int | None, remote: str | None) -> str:
    if user_id is not None:
        user = User.get_or_none(User.id == user_id)
        return user.username if user is not None else "another user"
    return remote or "vmond"


def _step(alarm: Alarm, n: int, done: bool, change: Change) -> None:
    step = next((s for s in alarm.steps or [] if s.get("n") == n), None)
    if step is None:
        raise _Refused(f"the alarm has no step {n}")
    if not done:
        if is_done(step):
            raise _Refused(f"step {n} is done already; a done step stays done")
        return
    tick_step(alarm.id, None, n, change)


def _media(command: Command, change: Change) -> None:
    event_id = _event(command)
    own = [m.id for m in Media.select(Media.id).where(Media.event == event_id).order_by(Media.id)]
    wanted = command.args["media_ids"]
    if wanted is None:
        wanted = own
    elif unknown := [i for i in wanted if i not in own]:
        raise _Refused(f"unknown media of event {event_id}: {', '.join(map(str, unknown))}")
    error = request_media(change, event_id, wanted)
    if error is not None:
        raise _Refused(error)
