"""A central station's operator acting on a site's event or alarm (issue 18): the action becomes a command.

On a central, an event or alarm with a ``site`` is the site's: the operator's dismiss, restore, raise, take over,
note, step or resolve is checked here exactly as the central's own would be (a note's length, a resolution code
...), then sent to the site as one command (:func:`vmond.store.centralcommands.queue_command`, in the caller's
transaction, so the outbox delivers it across restarts) about the site's own id (``remote_id``). Nothing changes
in the mirror until the site's result and its usual events/alarms messages come back. Whether the action may be
done now (an alarm resolved meanwhile at the site ...) is the site's to say: the mirror may be behind, so such a
command is sent and the site's refusal shown. Rows without a site (the central's own) are changed locally.
Synchronous, on a database thread.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

import peewee as pw

from vmond.store.alarms import AlarmNotFound, alarm_summary, check_note, check_resolution
from vmond.store.centralcommands import command_dict, queue_command
from vmond.store.changes import Change
from vmond.store.dismissals import UNDO_GRACE, UNDO_WINDOW, RestoreRefused
from vmond.store.events import EventNotFound, StatusConflict, get_event
from vmond.store.models import Alarm, AlarmEvent, Camera, CentralCommand, Site, utcnow
from vmond.store.scope import EVERY_ACCOUNT, Scope

MAX_SHOWN = 20  # commands shown with one event or alarm, newest first
STATES = ("pending", "done", "refused")


class Sender(NamedTuple):
    """Who sends a command and how: the operator (user id, username), the central's name, the site's command
    secret and the topic prefix."""

    who: tuple[int, str]
    central: str
    secret: str
    prefix: str


def site_of(kind: str, object_id: int) -> str | None:
    """The site (its key) a mirrored ``event`` or ``alarm`` belongs to; None for the central's own (also one that
    names a site without being the site's row, ``remote_id`` NULL: a ``site_offline`` the central raised). Raises
    :class:`EventNotFound` / :class:`AlarmNotFound` for an id that does not exist."""
    model: Any = AlarmEvent if kind == "event" else Alarm
    row = (model.select(Site.key, model.remote_id).join(Site, pw.JOIN.LEFT_OUTER, on=(model.site == Site.id))
           .where(model.id == object_id).dicts().first())
    if row is None:
        raise (EventNotFound if kind == "event" else AlarmNotFound)(object_id)
    return None if row["remote_id"] is None else row["key"]


def sites_of_events(event_ids: list[int]) -> dict[int, str | None]:
    """The site key (None: the central's own) of each of *event_ids* that exists."""
    found: dict[int, str | None] = {}
    for start in range(0, len(event_ids), 500):  # SQLite's limit on bound parameters
        query: Any = (AlarmEvent.select(AlarmEvent.id, AlarmEvent.remote_id, Site.key).join(Site, pw.JOIN.LEFT_OUTER)
                      .where(AlarmEvent.id.in_(event_ids[start:start + 500])))
        found.update((row["id"], None if row["remote_id"] is None else row["key"]) for row in query.dicts())
    return found


def _event(event_id: int) -> tuple[AlarmEvent, Site, dict[str, int]]:
    """The site's event, its site and its id there as a command names it."""
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None or event.site is None or event.remote_id is None:  # gone, or the central's own after all
        raise EventNotFound(event_id)
    return event, event.site, {"event_id": event.remote_id}


def _own_recent_dismissal(event: AlarmEvent, user_id: int) -> bool:
    """Whether *user_id* sent the dismissal of *event* within the undo window (the wall's undo, as locally)."""
    since = utcnow() - timedelta(seconds=UNDO_WINDOW + UNDO_GRACE)
    return (CentralCommand.select().where((CentralCommand.event == event.id) & (CentralCommand.action == "dismiss")
                                          & (CentralCommand.user == user_id) & (CentralCommand.created_at >= since))
            .exists())


def command_on_event(domain: str, event_id: int, action: str, sender: Sender, supervisor: bool = False,
                     change: Change | None = None) -> dict[str, Any]:
    """Send ``dismiss``, ``restore`` or ``alarm`` for the site's event; returns ``{"command", "event"}`` (the
    event as the mirror has it now). A restore is for supervisors, or the operator who sent the dismissal in the
    undo window (:class:`RestoreRefused`)."""
    event, site, target = _event(event_id)
    if action in ("dismiss", "restore") and event.status == "alarmed":  # final at the site too: say so now
        raise StatusConflict(f"event {event_id} is an alarm; work it on the alarm page")
    if action == "restore" and not supervisor and not _own_recent_dismissal(event, sender.who[0]):
        raise RestoreRefused(f"only a supervisor may restore event {event_id}: undo is for the guard who "
                             f"dismissed it, within {UNDO_WINDOW:g} seconds")
    command = queue_command(site, action, target, {}, sender.who, sender.central, sender.secret, sender.prefix,
                            event_id=event.id, change=change)
    return {"command": command, "event": get_event(domain, event_id)}


def dismiss_on_sites(ids: list[int], senders: dict[str, Sender], change: Change | None = None
                     ) -> list[dict[str, Any]]:
    """A bulk dismiss's share for the sites: one ``dismiss`` command per event of *ids* (each a site's, whose
    sender is in *senders*); returns the commands."""
    commands = []
    for event_id in dict.fromkeys(ids):
        event, site, target = _event(event_id)
        sender = senders[site.key]
        commands.append(queue_command(site, "dismiss", target, {}, sender.who, sender.central, sender.secret,
                                      sender.prefix, event_id=event.id, change=change))
    return commands


def command_on_alarm(alarm_id: int, action: str, args: dict[str, Any], sender: Sender, require_code: bool = False,
                     change: Change | None = None) -> dict[str, Any]:
    """Send ``acknowledge`` (taking over), ``note`` ``{"text"}``, ``step`` ``{"n"}`` or ``resolve``
    ``{"code", "text"}`` for the site's alarm, checked as the central's own alarm would be (ValueError,
    :class:`AlarmInvalid`, :class:`AlarmNotFound` for a step it does not have); returns ``{"command",
    "alarm"}`` (the alarm as the mirror has it now)."""
    alarm = Alarm.get_or_none(Alarm.id == alarm_id)
    if alarm is None or alarm.site is None or alarm.remote_id is None:
        raise AlarmNotFound(alarm_id)
    fields: dict[str, Any]
    if action == "acknowledge":
        fields = {"take_over": True}  # as on the central's own alarms: taking one over is allowed, and recorded
    elif action == "note":
        fields = {"text": check_note(args["text"])}
    elif action == "step":
        if not any(step.get("n") == args["n"] for step in alarm.steps or []):
            raise AlarmNotFound(f"the alarm has no step {args['n']}")
        fields = {"n": args["n"], "done": True}
    elif action == "resolve":
        code, text = check_resolution(args["code"], args["text"], require_code)
        fields = {"code": code, "text": check_note(text) if text else ""}
    else:
        raise ValueError(f"unknown action {action!r}")
    site, target = alarm.site, {"alarm_id": alarm.remote_id}
    command = queue_command(site, action, target, fields, sender.who, sender.central,
                            sender.secret, sender.prefix, event_id=alarm.event_id, alarm_id=alarm.id, change=change)
    return {"command": command, "alarm": alarm_summary(alarm_id)}


# --- what was sent, and what became of it ------------------------------------------------------------------------


def _shown(where: Any, limit: int, scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    """Operators' actions only: the central's own fetches of pictures (``media``) are not theirs to see."""
    query = (CentralCommand.select(CentralCommand, Site).join(Site).switch(CentralCommand)
             .join(AlarmEvent, pw.JOIN.LEFT_OUTER).join(Camera, pw.JOIN.LEFT_OUTER)
             .where(where & (CentralCommand.action != "media")))
    rows = (scope.where(query, Camera.account)
            .order_by(CentralCommand.created_at.desc(), CentralCommand.id.desc()).limit(limit))
    return [command_dict(row, row.site.key) | {"site_name": row.site.name or row.site.key} for row in rows]


def commands_about(kind: str, object_id: int, limit: int = MAX_SHOWN) -> list[dict[str, Any]]:
    """The newest commands sent about an ``event`` (dismiss, restore, raise) or an ``alarm`` (also its raising),
    each as :func:`command_dict` shows it with the site's name (``site_name``)."""
    if kind == "event":
        return _shown((CentralCommand.event == object_id) & CentralCommand.alarm.is_null(), limit)
    alarm = Alarm.get_or_none(Alarm.id == object_id)
    if alarm is None:
        return []
    return _shown((CentralCommand.alarm == object_id)
                  | ((CentralCommand.event == alarm.event_id) & (CentralCommand.action == "alarm")), limit)


def list_commands(state: str, limit: int, scope: Scope = EVERY_ACCOUNT) -> list[dict[str, Any]]:
    """The newest commands in *state* (or ``all``), of the events within *scope*."""
    return _shown(CentralCommand.state == state if state != "all" else pw.SQL("1 = 1"), limit, scope)
