"""When an account is monitored: its weekly windows in the site's time zone, dated exceptions (holidays), and a
supervisor's manual arm or disarm. Pure functions and frozen values, no I/O: the same answer for the same inputs.

A window that crosses midnight (``22:00`` to ``06:00``) belongs to the day it starts on. A dated exception replaces
the weekly windows that start on its days; a window of the day before still runs into it. Times are wall-clock
times of the site's zone, turned into instants with :mod:`zoneinfo` day by day, so a window keeps its local times
across a change to or from daylight saving time; a time the clocks skip that day counts an hour later, a time they
pass twice counts at its first pass. All comparisons are made in UTC (aware datetimes sharing one tzinfo would
compare their wall times).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

DAY_MINUTES = 24 * 60
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HORIZON_DAYS = 35  # how far ahead "until when" looks; a change further off reads as "until further notice"


@dataclass(frozen=True)
class Window:
    """Monitored from *start* to *end*, minutes after local midnight; ``end <= start`` ends on the next day,
    ``end == 1440`` at midnight."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{hhmm(self.start)}-{hhmm(self.end)}"


@dataclass(frozen=True)
class WeeklyWindow:
    days: frozenset[int]  # 0 Monday .. 6 Sunday
    window: Window


@dataclass(frozen=True)
class DatedException:
    """From *first* to *last* (inclusive) these *windows* start instead of the weekly ones; none: not monitored."""

    first: date
    last: date
    windows: tuple[Window, ...]
    name: str = ""


@dataclass(frozen=True)
class Schedule:
    weekly: tuple[WeeklyWindow, ...] = ()
    exceptions: tuple[DatedException, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "weekly": [{"days": [DAY_NAMES[d] for d in sorted(w.days)], "from": hhmm(w.window.start),
                        "to": hhmm(w.window.end)} for w in self.weekly],
            "exceptions": [{"first": e.first.isoformat(), "last": e.last.isoformat(), "name": e.name,
                            "windows": [{"from": hhmm(w.start), "to": hhmm(w.end)} for w in e.windows]}
                           for e in self.exceptions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            weekly=tuple(WeeklyWindow(frozenset(DAY_NAMES.index(d) for d in w["days"]),
                                      Window(_minutes(w["from"]), _minutes(w["to"]))) for w in data["weekly"]),
            exceptions=tuple(DatedException(date.fromisoformat(e["first"]), date.fromisoformat(e["last"]),
                                            tuple(Window(_minutes(w["from"]), _minutes(w["to"]))
                                                  for w in e["windows"]), e.get("name", ""))
                             for e in data["exceptions"]),
        )


@dataclass(frozen=True)
class Override:
    """A supervisor armed (*monitored*) or disarmed the account by hand, until *until* (None: until changed)."""

    monitored: bool
    until: datetime | None = None

    def holds_at(self, now: datetime) -> bool:
        return self.until is None or now < self.until


class Monitoring(NamedTuple):
    """Whether an account is monitored at a moment, and until when it stays so (None: no change in sight)."""

    monitored: bool
    until: datetime | None


def monitoring(now: datetime, schedule: Schedule | None, zone: ZoneInfo, override: Override | None = None
               ) -> Monitoring:
    """Whether an account with *schedule* (None: around the clock) is monitored at *now*, and until when.

    A manual *override* that still holds decides; when it ends on a moment the schedule agrees with, "until"
    runs on to where the schedule changes."""
    now = now.astimezone(UTC)
    if override is not None and override.holds_at(now):
        if override.until is None:
            return Monitoring(override.monitored, None)
        try:
            after = monitoring(override.until, schedule, zone)
        except OverflowError:  # an end so far off that the schedule's horizon runs past the calendar
            return Monitoring(override.monitored, override.until.astimezone(UTC))
        return Monitoring(override.monitored, after.until if after.monitored == override.monitored
                          else override.until.astimezone(UTC))
    if schedule is None:
        return Monitoring(True, None)
    today = now.astimezone(zone).date()
    horizon = datetime.combine(today + timedelta(days=HORIZON_DAYS), time(), zone).astimezone(UTC)
    intervals = _intervals(schedule, zone, today - timedelta(days=1), today + timedelta(days=HORIZON_DAYS))
    for start, end in _merged(intervals):
        if end <= now:
            continue
        if start <= now:
            return Monitoring(True, None if end >= horizon else end)
        return Monitoring(False, start)
    return Monitoring(False, None)


def windows_on(schedule: Schedule, day: date) -> tuple[Window, ...]:
    """The windows that start on *day*: a dated exception's, else the weekly ones of its weekday."""
    for exception in schedule.exceptions:
        if exception.first <= day <= exception.last:
            return exception.windows
    return tuple(w.window for w in schedule.weekly if day.weekday() in w.days)


def _intervals(schedule: Schedule, zone: ZoneInfo, first: date, last: date) -> list[tuple[datetime, datetime]]:
    result = []
    day = first
    while day <= last:
        for window in windows_on(schedule, day):
            end_day = day + timedelta(days=1) if window.end <= window.start or window.end == DAY_MINUTES else day
            result.append((_instant(day, window.start % DAY_MINUTES, zone),
                           _instant(end_day, window.end % DAY_MINUTES, zone)))
        day += timedelta(days=1)
    return sorted(result)


def _merged(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    local = datetime.combine(day, time(minutes // 60, minutes % 60), zone)
    # fold=0: a skipped time is read with the offset before the change (an hour later on the clock), a repeated
    # time at its first pass. Round-tripping through UTC makes a skipped time's instant explicit.
    return local.astimezone(UTC)


def hhmm(minutes: int) -> str:
    """Minutes after midnight as ``HH:MM`` (1440 as ``24:00``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, _, mins = text.partition(":")
    return int(hours) * 60 + int(mins)


def parse_clock_time(text: str) -> int:
    """``HH:MM`` (``24:00`` for midnight at a window's end) as minutes after midnight; ValueError if invalid."""
    hours, sep, mins = text.strip().partition(":")
    if not (sep and hours.isdigit() and mins.isdigit() and len(mins) == 2 and len(hours) <= 2):
        raise ValueError(f"{text!r} is not a time of day; write HH:MM, e.g. 18:00 or 07:30")
    value = int(hours) * 60 + int(mins)
    if int(mins) > 59 or value > DAY_MINUTES:
        raise ValueError(f"{text!r} is not a time of day from 00:00 to 24:00")
    return value
