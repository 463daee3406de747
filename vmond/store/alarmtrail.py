"""The audit trail as a guard reads it: one sentence per entry ("Ben took it over from Anna"), with the note and
the outcome in words, not codes. The entries themselves (``action``, ``detail``) stay as recorded, for programs;
this only words them. :func:`worded` and :func:`sentence` are pure; :func:`event_trail` reads an event's own
entries (dismissed, restored, a supervision condition raised and cleared, notifications sent) for its page and API.
"""

from __future__ import annotations

from typing import Any

from vmond.store.events import get_event
from vmond.store.models import AuditEntry, User

SYSTEM = "vmond"  # who an entry without a user is by (the picture taken at raising, a retired camera ...)


def worded(entries: list[AuditEntry], users: dict[int | None, User], labels: dict[str, str]
           ) -> list[dict[str, Any]]:
    """Audit entries as the API gives them: ``at``, ``who`` ({id, username} or None: vmond itself), ``action``,
    ``detail`` and the ``text`` a guard reads. *users* has every user the entries name."""
    usernames = {k: u.username for k, u in users.items() if k is not None}
    return [{"at": a.at.isoformat(), "action": a.action, "detail": a.detail,
             "who": None if (user := users.get(a.user_id)) is None else {"id": user.id, "username": user.username},
             "text": sentence(a.action, a.detail, usernames.get(a.user_id or 0) or remote_name(a.detail), usernames,
                              labels)}
            for a in entries]


def remote_name(detail: dict[str, Any] | None) -> str | None:
    """Who made a change sent as a command by a central station: "<user> at <central>" (issue 18), else None."""
    remote = (detail or {}).get("remote")
    if not isinstance(remote, dict):
        return None
    # A central's mirror of a site's action names the site in "user" already ("alice at Site A").
    central = remote.get("central")
    return f"{remote.get('user') or '?'} at {central}" if central else str(remote.get("user") or "?")


def event_trail(event_id: int) -> list[dict[str, Any]]:
    """The event's own audit trail, oldest first (an alarm's page adds the alarm's entries to it)."""
    entries = list(AuditEntry.select().where((AuditEntry.target_type == "event") & (AuditEntry.target_id == event_id))
                   .order_by(AuditEntry.id))
    ids = {a.user_id for a in entries if a.user_id is not None}
    users: dict[int | None, User] = {u.id: u for u in User.select().where(User.id.in_(ids))} if ids else {}
    return worded(entries, users, {})


def event_with_trail(domain: str, event_id: int) -> dict[str, Any]:
    """The event (:func:`vmond.store.events.get_event`) with its ``audit`` trail."""
    return {**get_event(domain, event_id), "audit": event_trail(event_id)}


def sentence(action: str, detail: dict[str, Any], who: str | None, usernames: dict[int, str],
             labels: dict[str, str]) -> str:
    """*action* by *who* (a username, None: vmond itself) as a sentence; *usernames* names the users an entry
    mentions (``took_over_from``), *labels* the resolution codes."""
    name = who or SYSTEM
    if action == "alarm.open":
        return f"{name} raised the alarm"
    if action == "event.alarmed":
        return f"{name} turned the event into an alarm"
    if action == "alarm.acknowledge":
        previous = detail.get("took_over_from")
        if previous:
            return f"{name} took it over from {usernames.get(previous, 'another user')}"
        return f"{name} is handling it"
    if action == "alarm.note":
        return f"{name} added a note: {detail.get('text', '')}"
    if action == "alarm.resolve":
        label = labels.get(detail.get("code") or "", detail.get("code") or "")
        label = label.split(" (")[0]  # "False alarm (nothing found)" reads as "False alarm" in a sentence
        text = detail.get("text") or ""
        return f"{name} resolved it as {label}" + (f": {text}" if text else "")
    if action == "alarm.step":
        return f"{name} ticked step {detail.get('n')}: {detail.get('text', '')}"
    if action == "alarm.snapshot":
        return f"{name} took the camera's picture at the moment of raising"
    if action == "alarm.snapshot_failed":
        return f"No picture at the moment of raising: {detail.get('error', '')}"
    if action == "condition.raised":  # supervision: vmond raised the event itself
        return f"{SYSTEM} raised it: {detail.get('text', '')}"
    if action == "condition.cleared":
        return f"{SYSTEM} closed it: {detail.get('reason', '')}"
    if action.startswith("notification."):  # notifications (issue 17): always by vmond itself
        return _notified(action, detail)
    if action.startswith("event."):
        status = action.split(".", 1)[1]
        worded = {"dismissed": "dismissed the event", "active": "put the event back on the wall"}
        return f"{name} {worded.get(status, f'set the event to {status}')}"
    return f"{name}: {action}"


def _notified(action: str, detail: dict[str, Any]) -> str:
    target = detail.get("target", "?")
    why = {"alarm_raised": "the alarm", "unhandled": "the unhandled event",
           "supervision": "the supervision event"}.get(detail.get("rule", ""), "it")
    if action == "notification.sent":
        attempts = detail.get("attempts") or 1
        return f"{SYSTEM} notified {target} of {why}" + (f" (attempt {attempts})" if attempts > 1 else "")
    if action == "notification.retrying":
        return f"{SYSTEM} could not notify {target} of {why} yet, trying again: {detail.get('error', '')}"
    if action == "notification.failed":
        return f"{SYSTEM} gave up notifying {target} of {why}: {detail.get('error', '')}"
    return f"{SYSTEM}: {action}"
