"""Building blocks shared by the vendor recognisers in ``vmond.ingest.vendors``.

Camera wall-clock times, the ``Key: value`` fields of alarm bodies, value
clean-up, and the start/stop *phase* of an alarm.  Kept apart from the
recognisers so that each module stays small and so that ``mimetext`` can use
``parse_camera_time`` without importing the recognisers.

Phases: Dahua EZIP models and some NVRs send one mail when an alarm starts and
another when it stops, for the same event.  The phase is read from, in order:

1. a body field whose whole value is a phase word ("Alarm Action: Start",
   "Event State: Stop", "Action: Stop") - explicit, so it wins;
2. a phase word at the *end* of the event field ("Alarm Event: Motion
   Detection Start") - the word is removed from the event type, so the start
   and stop mails of one alarm share the event type "Motion Detection";
3. a phase word at the end of the subject, unless the subject ends with the
   camera or device name (a camera called "Back End" is not a stop mail).

Only a *trailing* word counts: firmware appends the phase, and a leading word
("Start of motion", "End of line crossing") is prose we cannot tell from a
name, so such a subject stays the event type with no phase.  A phase word must
stand alone ("Backend", "Weekend", "Restart" are not phases) and something
must remain before it ("Start" alone is an event type, not a phase).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Field",
    "channel_value",
    "clean_value",
    "field_phase",
    "first_field",
    "label_value",
    "parse_camera_time",
    "parse_fields",
    "split_phase",
    "time_field",
]

MAX_VALUE = 200  # longest event type we keep
MAX_LABEL = 64  # longest camera name / channel we keep (recorders allow 32 characters or so)


# --- times -------------------------------------------------------------------

_YMD = re.compile(
    r"(?<!\d)(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?:[ \t]*[,T_ \t][ \t]*)"
    r"(?P<H>\d{1,2})[:.](?P<M>\d{1,2})(?:[:.](?P<S>\d{1,2}))?(?:[ \t]*(?P<ampm>[AaPp][Mm]))?"
)
_XXY = re.compile(
    r"(?<!\d)(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<y>\d{4})(?:[ \t]*[,T_ \t][ \t]*)"
    r"(?P<H>\d{1,2}):(?P<M>\d{1,2})(?::(?P<S>\d{1,2}))?(?:[ \t]*(?P<ampm>[AaPp][Mm]))?"
)


def _mk(y: str, m: str, d: str, hh: str, mm: str, ss: str | None, ampm: str | None) -> datetime | None:
    hour = int(hh)
    if ampm:
        if hour > 12:
            return None
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    try:
        value = datetime(int(y), int(m), int(d), hour, int(mm), int(ss or 0))
    except ValueError:
        return None
    return value if 1970 <= value.year <= 2100 else None


def parse_camera_time(text: str, order: str | None = None) -> datetime | None:
    """Find the first date-and-time in ``text`` and return it as a naive datetime.

    ``order`` is "DMY" or "MDY" for day/month/year forms when the mail states it
    (Dahua writes ``Alarm Start Time(D/M/Y H:M:S)``); without it an ambiguous
    ``01/02/2020`` is read day-first, unless one field is over 12.
    """
    text = text[:4096]
    ymd, xxy = _YMD.search(text), _XXY.search(text)
    if ymd and (not xxy or ymd.start() <= xxy.start()):
        g = ymd.groupdict()
        return _mk(g["y"], g["m"], g["d"], g["H"], g["M"], g["S"], g["ampm"])
    if xxy:
        g = xxy.groupdict()
        a, b = int(g["a"]), int(g["b"])
        month_first = order == "MDY" or (order != "DMY" and b > 12 >= a)
        if month_first:
            return _mk(g["y"], g["a"], g["b"], g["H"], g["M"], g["S"], g["ampm"])
        return _mk(g["y"], g["b"], g["a"], g["H"], g["M"], g["S"], g["ampm"])
    return None


def _order_hint(label: str) -> str | None:
    compact = re.sub(r"[^DMY]", "", label.upper())
    return compact[:3] if compact[:3] in ("DMY", "MDY", "YMD") else None


# --- "Key: value" bodies ---------------------------------------------------------

# A key may hold a parenthesised label with colons in it, e.g. Dahua's
# "Alarm Start Time(D/M/Y H:M:S): 06/05/2018 15:28:40", or a bracketed channel id,
# e.g. Swann's "Channel Name [IP-CH1]: Front Yard".  Bounded repeats keep the
# scan linear on hostile bodies.  Full-width colons come from Chinese firmware.
_FIELD = re.compile(
    r"^[ \t]*(?P<key>[^\s:：(\[][^:：(\[\n]{0,60}?)[ \t]*(?:\((?P<paren>[^)\n]{0,40})\))?"
    r"[ \t]*(?:\[(?P<bracket>[^\]\n]{0,40})\])?[ \t]*[:：][ \t]*(?P<val>[^\n]{0,500})",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Field:
    """One ``Key(paren) [bracket]: value`` line of an alarm body."""

    value: str
    paren: str
    bracket: str


def parse_fields(body: str) -> dict[str, Field]:
    """Map normalised keys ("alarm start time") to the first value seen."""
    out: dict[str, Field] = {}
    for match in _FIELD.finditer(body[:65536]):
        key = " ".join(match.group("key").lower().split())
        if key not in out:
            value = " ".join(match.group("val").split())
            out[key] = Field(value, match.group("paren") or "", match.group("bracket") or "")
    return out


def first_field(fields: Mapping[str, Field], *keys: str) -> Field | None:
    for key in keys:
        field = fields.get(key)
        if field is not None and field.value:
            return field
    return None


def clean_value(value: str | None, limit: int = MAX_VALUE) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())[:limit].strip(" .,;:-")
    return value or None


# Controls (Cc) and the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a label
# shown among other text they could hide it or turn it around. The bidi *marks* (U+200E, U+200F) stay.
_LABEL_DROP = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def label_value(value: str | None) -> str | None:
    """A camera name or channel as shown to a guard: one line without controls, at most ``MAX_LABEL`` long."""
    if value is None:
        return None
    return clean_value(_LABEL_DROP.sub(" ", value)[: MAX_LABEL * 4], MAX_LABEL)


def channel_value(value: str | None) -> str | None:
    value = clean_value(value)
    if value and value.isdigit():
        return str(int(value[:9]))
    return value


def time_field(fields: Mapping[str, Field], *keys: str) -> datetime | None:
    field = first_field(fields, *keys)
    if field is None:
        return None
    return parse_camera_time(field.value, _order_hint(field.paren))


# --- start / stop phase ----------------------------------------------------------------

_PHASES = {
    "start": "start", "started": "start", "begin": "start",
    "stop": "stop", "stopped": "stop", "end": "stop", "ended": "stop",
}
# The phase word at the very end, not glued to a preceding letter or digit
# ("Backend", "Restart"); "_" and "-" separate (firmware writes "Motion_Start").
# One fixed-length look-behind per position: linear on an 8 KB subject.
_PHASE_TAIL = re.compile(r"(?<![^\W_])(start(?:ed)?|begin|stop(?:ped)?|end(?:ed)?)\Z", re.IGNORECASE)
_TRAILER = " \t.!)]>"  # "Motion Detection (Start)", "Motion Detection Stop."
_JOINERS = " \t_-:;,/|([<"  # between the event and its phase word
# Body fields that hold only the phase ("Alarm Action: Start", "Event State: Stop").
_PHASE_KEYS = (
    "alarm action", "event action", "action", "alarm state", "event state", "state",
    "alarm status", "event status", "alarm phase", "phase",
)


def split_phase(text: str) -> tuple[str, str | None]:
    """Split "Motion Detection Start" into ("Motion Detection", "start").

    Returns ``(text, None)`` when ``text`` does not end with a phase word, or
    when nothing but separators would remain before it.
    """
    core = text.rstrip(_TRAILER)
    match = _PHASE_TAIL.search(core)
    if match is None:
        return text, None
    base = core[: match.start()].rstrip(_JOINERS)
    if not any(ch.isalnum() for ch in base):
        return text, None
    return base, _PHASES[match.group(1).lower()]


def field_phase(fields: Mapping[str, Field]) -> str | None:
    """The phase a dedicated body field states, when its whole value is one phase word."""
    for key in _PHASE_KEYS:
        field = fields.get(key)
        if field is not None:
            phase = _PHASES.get(field.value.strip(_TRAILER).lower())
            if phase is not None:
                return phase
    return None
