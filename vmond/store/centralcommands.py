"""A central station's commands to its sites (issue 18): an operator's action, signed, sent, and answered.

:func:`queue_command` writes the command (``central_command``, state ``pending``) and its signed MQTT message
(``<prefix>/<site>/commands`` in the outbox) in the caller's transaction: the forwarder sends it at least once,
across restarts and broker outages, and the site applies it once (it remembers command ids). The site's answer on
``commands/result`` (:func:`record_result`) makes it ``done`` or ``refused`` with the site's reason; the change
itself comes back as the site's usual events and alarms messages, mirrored like any other.
Synchronous, on a database thread, inside the caller's transaction.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from vmond.store import outbox
from vmond.store.changes import Change
from vmond.store.commands import envelope
from vmond.store.models import CentralCommand, Site, utcnow
from vmond.store.sites import parse_time

log = logging.getLogger(__name__)

MAX_ERROR = 1000


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def command_dict(command: CentralCommand, site_key: str | None = None) -> dict[str, Any]:
    """A command as the central's API and dashboards show it."""
    return {"id": command.uid, "site": site_key or Site.get_by_id(command.site_id).key, "action": command.action,
            "event_id": command.event_id, "alarm_id": command.alarm_id, "state": command.state,
            "error": command.error, "created_at": _iso(command.created_at),
            "answered_at": _iso(command.answered_at), "user_id": command.user_id}


def queue_command(site: Site, action: str, target: dict[str, int], fields: dict[str, Any], who: tuple[int, str],
                  central: str, secret: str, prefix: str, *, event_id: int | None = None,
                  alarm_id: int | None = None, change: Change | None = None) -> dict[str, Any]:
    """Queue *action* on the site's *target* (``{"event_id": <site's id>}`` or ``{"alarm_id": ...}``) with the
    action's *fields*, by *who* (user id, name) at *central*, signed with *secret*; *event_id* / *alarm_id* are
    the central's own ids it is about. Returns the command as :func:`command_dict` shows it."""
    now = utcnow()
    body = {"id": f"{uuid.uuid4()}", "site": site.key, "action": action, **target, "user": who[1],
            "central": central, "at": now.isoformat(), **fields}
    outbox.enqueue(f"{prefix}/{site.key}/commands", envelope(body, secret), qos=1)
    command = CentralCommand.create(uid=body["id"], site=site, action=action, event=event_id, alarm=alarm_id,
                                    user=who[0], body=body, created_at=now)
    data = command_dict(command, site.key)
    if change is not None:
        change.queued += 1  # wakes the forwarder
        change.announce("command.created", data, about=("command", command.id))
    return data


def record_result(key: str, result: dict[str, Any], at: datetime, change: Change | None = None
                  ) -> dict[str, Any] | None:
    """The site's answer to one of our commands: ``done`` or ``refused`` with its reason. A result for a command
    this central did not send (or already answered: a redelivery) changes nothing; returns the command or None."""
    uid = result.get("id")
    command = (CentralCommand.select(CentralCommand, Site).join(Site)
               .where((CentralCommand.uid == uid) & (Site.key == key)).first()) if isinstance(uid, str) else None
    if command is None or command.state != "pending":
        return None
    ok = result.get("ok") is True
    command.state = "done" if ok else "refused"
    error = result.get("error")
    command.error = None if ok else (error[:MAX_ERROR] if isinstance(error, str) else "refused by the site")
    command.answered_at = parse_time(result.get("at"), at) or at  # never later than it arrived
    command.save()
    if not ok:
        log.warning("central: site %s refused command %s (%s): %s", key, command.uid, command.action, command.error)
    data = command_dict(command, key)
    if change is not None:
        change.announce("command.updated", data, about=("command", command.id))
    return data
