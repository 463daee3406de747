"""The shift handover: what happened between two instants, for a supervisor taking over or filing the night.

One call, :func:`alarm_report`, gathers the alarms raised in the period (with who handled them, the outcome, the
notes and the action-plan steps), the events dismissed per guard, the counts per account and per kind, and the
events and alarms per hour; time-to-handle is measured from the event's receipt (vmond's clock, never the
camera's) to the alarm's resolution. Grouping happens in SQL on the UTC text of the timestamps, so a busy week
costs a few hundred rows, not one per event. The caller bounds the period (see ``MAX_REPORT_RANGE`` in the web
layer). Synchronous: run on a database thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import peewee as pw

from vmond.store.alarms import list_alarms
from vmond.store.models import Account, Alarm, AlarmEvent, AlarmNote, Camera, User
from vmond.store.scope import EVERY_ACCOUNT, Scope

MAX_REPORT_ALARMS = 5000  # rows in one report: beyond it the report says it was cut (a week rarely comes close)
# Time from an event's receipt to its alarm's resolution, in buckets a chart can show: (upper bound s, label).
HANDLE_BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "< 1 min"), (300, "1-5 min"), (900, "5-15 min"), (3600, "15-60 min"), (float("inf"), "1 h +"))
_HOUR_TEXT = 13  # "YYYY-MM-DDTHH" of the stored UTC text (vmond.store.models.UtcDateTimeField)


def _rows(query: pw.ModelSelect[Any]) -> list[tuple[Any, ...]]:
    """The rows of a select of columns as tuples (peewee's stubs type every row as a model)."""
    return [tuple(row) for row in cast(Iterable[Any], query.tuples())]


def _who(user_id: int | None, names: dict[int, str]) -> dict[str, Any] | None:
    return None if user_id is None else {"id": user_id, "username": names.get(user_id, "")}


def _seconds(later: str | None, earlier: str | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds(), 1)


def _in_range(field: pw.Field, since: datetime, until: datetime) -> pw.Expression:
    return (field >= since) & (field < until)


def _account_filter(query: pw.ModelSelect[Any], scope: Scope) -> pw.ModelSelect[Any]:
    return scope.where(query, Camera.account)


def _alarms(since: datetime, until: datetime, scope: Scope) -> tuple[list[dict[str, Any]], bool]:
    """The alarms raised in the period, oldest first, as the API shows an Alarm plus kind, notes, steps, times."""
    rows = list_alarms("all", since=since, until=until, limit=MAX_REPORT_ALARMS + 1, scope=scope)
    truncated = len(rows) > MAX_REPORT_ALARMS
    rows = rows[:MAX_REPORT_ALARMS][::-1]
    kind = AlarmEvent.kind
    kinds = {event_id: k for event_id, k in _rows(
        AlarmEvent.select(AlarmEvent.id, kind).join(Alarm, on=(Alarm.event == AlarmEvent.id))
        .where(_in_range(Alarm.opened_at, since, until)))}
    notes: dict[int, list[dict[str, Any]]] = {}
    for alarm_id, at, author, text in _rows(
            AlarmNote.select(AlarmNote.alarm, AlarmNote.created_at, User.username, AlarmNote.text)
            .join(Alarm).switch(AlarmNote).join(User, pw.JOIN.LEFT_OUTER)
            .where(_in_range(Alarm.opened_at, since, until)).order_by(AlarmNote.id)):
        notes.setdefault(alarm_id, []).append({"created_at": at.isoformat(), "author": author, "text": text})
    for row in rows:
        row["kind"] = kinds.get(row["event_id"], "other")
        row["notes"] = notes.get(row["id"], [])
        row["steps"] = row.get("steps") or []  # the account's action plan, ticked, where the alarm has one
        row["seconds_to_raise"] = _seconds(row["opened_at"], row["received_at"])
        row["seconds_to_resolve"] = _seconds(row["resolved_at"], row["received_at"])
    return rows, truncated


def _dismissed(since: datetime, until: datetime, scope: Scope) -> list[dict[str, Any]]:
    """Events dismissed in the period, counted per guard who dismissed them, most first."""
    query = (AlarmEvent.select(AlarmEvent.status_changed_by, pw.fn.COUNT(AlarmEvent.id))
             .join(Camera, pw.JOIN.LEFT_OUTER)
             .where(AlarmEvent.status == "dismissed", _in_range(AlarmEvent.status_changed_at, since, until))
             .group_by(AlarmEvent.status_changed_by))
    counts = _rows(_account_filter(query, scope))
    users = User.select(User.id, User.username).where(User.id.in_([u for u, _ in counts if u]))
    names = {i: n for i, n in _rows(users)}
    return sorted(({"user": _who(user_id, names), "events": n} for user_id, n in counts),
                  key=lambda row: (-row["events"], (row["user"] or {}).get("username", "")))


def _event_counts(since: datetime, until: datetime, scope: Scope
                  ) -> list[tuple[str, int | None, str, int]]:
    """(UTC hour, account id, kind, events) for the events received in the period; camera test mails left out."""
    hour = pw.fn.substr(AlarmEvent.received_at, 1, _HOUR_TEXT)
    kind = AlarmEvent.kind
    query = (AlarmEvent.select(hour, Camera.account, kind, pw.fn.COUNT(AlarmEvent.id))
             .join(Camera, pw.JOIN.LEFT_OUTER)
             .where(_in_range(AlarmEvent.received_at, since, until), AlarmEvent.is_test == False)  # noqa: E712
             .group_by(hour, Camera.account, kind))
    return [(hour, account, kind, n) for hour, account, kind, n in _rows(_account_filter(query, scope))]


def _hours(since: datetime, until: datetime) -> list[datetime]:
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [start + timedelta(hours=n) for n in range(int((until - start).total_seconds() // 3600) + 1)
            if start + timedelta(hours=n) < until]


def _per_hour(since: datetime, until: datetime, events: list[tuple[str, int | None, str, int]],
              alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_hour: Counter[str] = Counter()
    for hour, _, _, n in events:
        by_hour[hour] += n
    alarm_hours = Counter(datetime.fromisoformat(a["opened_at"]).astimezone(UTC).strftime("%Y-%m-%dT%H")
                          for a in alarms)
    return [{"hour": h.isoformat(), "events": by_hour[h.strftime("%Y-%m-%dT%H")],
             "alarms": alarm_hours[h.strftime("%Y-%m-%dT%H")]} for h in _hours(since, until)]


def _counts(events: list[tuple[str, int | None, str, int]], alarms: list[dict[str, Any]]) -> dict[str, Any]:
    event_accounts: Counter[int | None] = Counter()
    event_kinds: Counter[str] = Counter()
    for _, account_id, kind, n in events:
        event_accounts[account_id] += n
        event_kinds[kind] += n
    alarm_accounts = Counter(a["account"]["id"] if a["account"] else None for a in alarms)
    alarm_kinds = Counter(a["kind"] for a in alarms)
    ids = set(event_accounts) | set(alarm_accounts)
    named = Account.select(Account.id, Account.name).where(Account.id.in_([i for i in ids if i]))
    names = {i: n for i, n in _rows(named)}
    accounts = [{"account": None if i is None else {"id": i, "name": names.get(i, "")},
                 "events": event_accounts[i], "alarms": alarm_accounts[i]} for i in ids]
    kinds = [{"kind": k, "events": event_kinds[k], "alarms": alarm_kinds[k]}
             for k in set(event_kinds) | set(alarm_kinds)]
    return {"accounts": sorted(accounts, key=lambda r: (-r["events"], -r["alarms"], (r["account"] or {})
                                                        .get("name", ""))),
            "kinds": sorted(kinds, key=lambda r: (-r["events"], -r["alarms"], r["kind"]))}


def _time_to_handle(alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    buckets = Counter[str]()
    for alarm in alarms:
        if (seconds := alarm["seconds_to_resolve"]) is not None:
            buckets[next(label for bound, label in HANDLE_BUCKETS if seconds < bound)] += 1
    rows = [{"bucket": label, "alarms": buckets[label]} for _, label in HANDLE_BUCKETS]
    rows.append({"bucket": "not resolved", "alarms": sum(1 for a in alarms if a["resolved_at"] is None)})
    return rows


def alarm_report(since: datetime, until: datetime, scope: Scope = EVERY_ACCOUNT) -> dict[str, Any]:
    """The handover report for [*since*, *until*) (aware datetimes), of *scope*'s accounts."""
    alarms, truncated = _alarms(since, until, scope)
    events = _event_counts(since, until, scope)
    dismissed = _dismissed(since, until, scope)
    resolved = [a["seconds_to_resolve"] for a in alarms if a["seconds_to_resolve"] is not None]
    return {
        "from": since.isoformat(), "to": until.isoformat(),
        "totals": {"events": sum(n for *_, n in events), "alarms": len(alarms), "resolved": len(resolved),
                   "dismissed": sum(row["events"] for row in dismissed),
                   "median_seconds_to_resolve": sorted(resolved)[len(resolved) // 2] if resolved else None},
        "alarms": alarms, "alarms_truncated": truncated,
        "dismissed": dismissed,
        "counts": _counts(events, alarms),
        "per_hour": _per_hour(since, until, events, alarms),
        "time_to_handle": _time_to_handle(alarms),
    }
