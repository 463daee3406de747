"""Parsers for schedules and snooze (issue 17): ``site.timezone`` and ``accounts[].schedule``.

A schedule in the file::

    schedule:
      weekly:                                   # when the account is monitored, in site.timezone
        - {days: mon-fri, from: "18:00", to: "07:30"}   # to before from: into the next morning
        - {days: [sat, sun], from: "00:00", to: "24:00"}
      exceptions:                               # dated: these days' own windows instead of the weekly ones
        - {date: 2026-12-25, name: Christmas, monitored: true}       # all day
        - {date: 2026-12-31, until: 2027-01-01, from: "12:00", to: "24:00"}
        - {date: 2026-08-15, monitored: false}  # a day the premises are open: not monitored

Every problem names its own line and key, like the rest of the configuration.
"""

from __future__ import annotations

import difflib
import os
import zoneinfo
from datetime import date
from pathlib import Path

import yaml

from vmond.config.values import Ctx, Invalid, boolean, is_null, kind, text
from vmond.util.schedule import (
    DAY_MINUTES,
    DAY_NAMES,
    DatedException,
    Schedule,
    WeeklyWindow,
    Window,
    hhmm,
    parse_clock_time,
)

_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EVERY_DAY = ("daily", "every day", "all")


# --- site.timezone --------------------------------------------------------------------------------------------


def system_timezone() -> str:
    """The system's zone (``TZ``, else where ``/etc/localtime`` points, else ``/etc/timezone``), UTC if unknown."""
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    try:
        candidates.append(str(Path("/etc/localtime").resolve()).partition("/zoneinfo/")[2])
    except OSError:
        pass
    try:
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    for name in candidates:
        if name and _is_zone(name):
            return name
    return "UTC"


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def timezone(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
    """An IANA zone name such as ``Europe/Berlin``; null: the system's zone (resolved in vmond.config.check)."""
    name = text(node, nullable=True)
    if name is None:
        return None
    name = name.strip()
    if not _is_zone(name):
        known = zoneinfo.available_timezones()
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        raise Invalid(f"{name!r} is not a time zone name{f'; did you mean `{close[0]}`?' if close else ''} "
                      "(an IANA name such as Europe/Berlin, America/New_York or UTC)")
    return name


# --- accounts[].schedule --------------------------------------------------------------------------------------


def _mapping(node: yaml.Node, keys: tuple[str, ...], ctx: Ctx, path: str, example: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(f"expected a mapping, e.g. {example}, found {kind(node)}")
    found: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else f"keys here: {', '.join(keys)}"
            ctx.problem(key_node, f"{path}.{name}", f"unknown key; {hint}")
            continue
        found[name] = value_node
    return found


def _day(name: str) -> int:
    word = name.strip().lower()
    if word in DAY_NAMES:
        return DAY_NAMES.index(word)
    if word in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(word)
    raise ValueError(f"{name!r} is not a day; write mon, tue, wed, thu, fri, sat or sun")


def _days(node: yaml.Node) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``[mon, wed]``, ``daily``; a range may wrap (``fri-mon``)."""
    if isinstance(node, yaml.SequenceNode):
        parts = [text(item) for item in node.value]
    else:
        value = text(node)
        if value.strip().lower() in _EVERY_DAY:
            return frozenset(range(7))
        parts = value.split(",")
    result: set[int] = set()
    try:
        for part in parts:
            first, dash, last = part.partition("-")
            if not dash:
                result.add(_day(first))
                continue
            start, end = _day(first), _day(last)
            result.update((start + n) % 7 for n in range((end - start) % 7 + 1))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if not result:
        raise Invalid("name at least one day, e.g. mon-fri")
    return frozenset(result)


def _clock(node: yaml.Node) -> int:
    # Read as written: unquoted 18:00 is a YAML 1.1 base-60 number, not a time.
    try:
        return parse_clock_time(text(node))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _window(found: dict[str, yaml.Node], node: yaml.Node, ctx: Ctx, path: str) -> Window | None:
    missing = [key for key in ("from", "to") if key not in found]
    if missing:
        ctx.problem(node, path, f"needs {' and '.join(f'`{k}`' for k in missing)} (HH:MM), e.g. "
                    "{from: \"18:00\", to: \"07:30\"}")
        return None
    times = {}
    for key in ("from", "to"):
        try:
            times[key] = _clock(found[key])
        except Invalid as exc:
            ctx.problem(found[key], f"{path}.{key}", str(exc))
    if len(times) < 2:
        return None
    if times["from"] == DAY_MINUTES:
        ctx.problem(found["from"], f"{path}.from", "a window cannot start at 24:00; start at 00:00")
        return None
    if times["from"] == times["to"]:
        ctx.problem(found["to"], f"{path}.to", "from and to are the same time; for a whole day write "
                    "from: \"00:00\", to: \"24:00\"")
        return None
    return Window(times["from"], times["to"])


def _date(node: yaml.Node) -> date:
    try:
        return date.fromisoformat(text(node).strip())
    except ValueError:
        raise Invalid(f"{text(node)!r} is not a date; write YYYY-MM-DD, e.g. 2026-12-25") from None


def _weekly(node: yaml.Node, ctx: Ctx, path: str) -> tuple[WeeklyWindow, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of windows, e.g. [{{days: mon-fri, from: \"18:00\", to: \"07:30\"}}], "
                      f"found {kind(node)}")
    result = []
    for index, item in enumerate(node.value):
        where = f"{path}[{index}]"
        try:
            found = _mapping(item, ("days", "from", "to"), ctx, where, '{days: mon-fri, from: "18:00", to: "07:30"}')
        except Invalid as exc:
            ctx.problem(item, where, str(exc))
            continue
        if "days" not in found:
            ctx.problem(item, f"{where}.days", "needs `days`, e.g. mon-fri, [sat, sun] or daily")
            continue
        try:
            days = _days(found["days"])
        except Invalid as exc:
            ctx.problem(found["days"], f"{where}.days", str(exc))
            continue
        window = _window(found, item, ctx, where)
        if window is not None:
            result.append(WeeklyWindow(days, window))
    return tuple(result)


def _exceptions(node: yaml.Node, ctx: Ctx, path: str) -> tuple[DatedException, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of dated exceptions, e.g. [{{date: 2026-12-25, monitored: true}}], "
                      f"found {kind(node)}")
    result = []
    for index, item in enumerate(node.value):
        where = f"{path}[{index}]"
        try:
            found = _mapping(item, ("date", "until", "name", "monitored", "from", "to"), ctx, where,
                             "{date: 2026-12-25, monitored: true}")
        except Invalid as exc:
            ctx.problem(item, where, str(exc))
            continue
        try:
            if "date" not in found:
                raise Invalid("needs `date` (YYYY-MM-DD)")
            first = _date(found["date"])
            last = _date(found["until"]) if "until" in found else first
            if last < first:
                ctx.problem(found["until"], f"{where}.until", "is before `date`")
                continue
            name = text(found["name"]) if "name" in found else ""
        except Invalid as exc:
            ctx.problem(item, f"{where}.date", str(exc))
            continue
        has_times = "from" in found or "to" in found
        if ("monitored" in found) == has_times:
            ctx.problem(item, where, "give either `monitored: true|false` (the whole day) or `from` and `to`")
            continue
        if has_times:
            window = _window(found, item, ctx, where)
            if window is None:
                continue
            windows: tuple[Window, ...] = (window,)
        else:
            try:
                windows = (Window(0, DAY_MINUTES),) if boolean(found["monitored"], ctx, where) else ()
            except Invalid as exc:
                ctx.problem(found["monitored"], f"{where}.monitored", str(exc))
                continue
        result.append(DatedException(first, last, windows, name))
    return tuple(result)


def schedule(node: yaml.Node, ctx: Ctx, path: str) -> Schedule | None:
    """``accounts[].schedule``; null or absent: monitored around the clock."""
    if is_null(node):
        return None
    found = _mapping(node, ("weekly", "exceptions"), ctx, path, "{weekly: [...], exceptions: [...]}")
    weekly: tuple[WeeklyWindow, ...] = ()
    exceptions: tuple[DatedException, ...] = ()
    try:
        if not is_null(found.get("weekly")):
            weekly = _weekly(found["weekly"], ctx, f"{path}.weekly")
    except Invalid as exc:
        ctx.problem(found["weekly"], f"{path}.weekly", str(exc))
    try:
        if not is_null(found.get("exceptions")):
            exceptions = _exceptions(found["exceptions"], ctx, f"{path}.exceptions")
    except Invalid as exc:
        ctx.problem(found["exceptions"], f"{path}.exceptions", str(exc))
    return Schedule(weekly, exceptions)


def show_schedule(value: Schedule) -> dict[str, list[dict[str, object]]]:
    """A schedule as the file writes it, for dumps that can be read back."""
    weekly: list[dict[str, object]] = [
        {"days": ",".join(DAY_NAMES[d] for d in sorted(w.days)), "from": hhmm(w.window.start),
         "to": hhmm(w.window.end)} for w in value.weekly]
    exceptions: list[dict[str, object]] = []
    for item in value.exceptions:
        shown: dict[str, object] = {"date": item.first.isoformat()}
        if item.last != item.first:
            shown["until"] = item.last.isoformat()
        if item.name:
            shown["name"] = item.name
        if item.windows and item.windows[0] != Window(0, DAY_MINUTES):
            shown.update({"from": hhmm(item.windows[0].start), "to": hhmm(item.windows[0].end)})
        else:
            shown["monitored"] = bool(item.windows)
        exceptions.append(shown)
    return {"weekly": weekly, "exceptions": exceptions}
