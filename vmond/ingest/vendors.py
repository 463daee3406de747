"""Vendor hints: event type, channel, camera name and time from alarm mails.

Cameras and recorders do not put structured data in headers; they write it
into the subject and a ``Key: value`` text body whose wording differs by
vendor and firmware.  Each recogniser below knows one family's wording and
returns ``None`` when the mail is not theirs; the first match wins.  Whatever
matches, values are the vendor's own words (trimmed), except that a purely
numeric channel loses its leading zeros ("01" -> "1") so that the same camera
gets the same channel whichever field or filename it came from.

Times are returned naive: they are the camera's wall clock, whose zone the
mail does not state (and which often disagrees with the Date header).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["VendorHints", "extract_hints", "is_test_mail", "parse_camera_time"]

_MAX_VALUE = 200  # longest camera name / event type we keep


@dataclass(frozen=True)
class VendorHints:
    """What the vendor recognisers could extract; every field may be None."""

    vendor: str | None = None
    event_type: str | None = None
    channel: str | None = None
    camera_name: str | None = None
    event_time: datetime | None = None
    device_name: str | None = None


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
class _Field:
    value: str
    paren: str
    bracket: str


def _fields(body: str) -> dict[str, _Field]:
    """Map normalised keys ("alarm start time") to the first value seen."""
    out: dict[str, _Field] = {}
    for match in _FIELD.finditer(body[:65536]):
        key = " ".join(match.group("key").lower().split())
        if key not in out:
            value = " ".join(match.group("val").split())
            out[key] = _Field(value, match.group("paren") or "", match.group("bracket") or "")
    return out


def _first(fields: Mapping[str, _Field], *keys: str) -> _Field | None:
    for key in keys:
        field = fields.get(key)
        if field is not None and field.value:
            return field
    return None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())[:_MAX_VALUE].strip(" .,;:-")
    return value or None


def _channel(value: str | None) -> str | None:
    value = _clean(value)
    if value and value.isdigit():
        return str(int(value[:9]))
    return value


# --- recognisers -------------------------------------------------------------------

@dataclass(frozen=True)
class _Mail:
    subject: str
    body: str
    headers: Mapping[str, str]
    filenames: Sequence[str]
    fields: Mapping[str, _Field]


def _time_field(fields: Mapping[str, _Field], *keys: str) -> datetime | None:
    field = _first(fields, *keys)
    if field is None:
        return None
    return parse_camera_time(field.value, _order_hint(field.paren))


_NAME_NUM = re.compile(r"^(?P<name>.*?)\s*\((?P<num>[A-Za-z]{0,3}\d{1,4})\)$")


def _hikvision(m: _Mail) -> VendorHints | None:
    # IPC bodies: EVENT TYPE / EVENT TIME / IPC NAME / CHANNEL NAME / CHANNEL NUMBER.
    # DVR/NVR bodies: ... / DVR NAME / CAMERA NAME(NUM): Camera 01(D1).
    # Chinese firmware: 事件类型 / 事件时间 / 通道名称 / 通道号.
    mailer = m.headers.get("x-mailer", "").lower()
    f = m.fields
    if not (
        "hik" in mailer
        or "automatically generated e-mail from your" in m.body.lower()
        or ("event type" in f and ("event time" in f or "camera name" in f))
        or "事件类型" in f
        or "报警类型" in f
    ):
        return None
    camera = _first(f, "channel name", "通道名称", "camera name")
    channel = _first(f, "channel number", "channel no.", "channel no", "通道号")
    camera_name = camera.value if camera else None
    channel_id = channel.value if channel else None
    if camera is not None and camera.paren.upper() == "NUM":
        found = _NAME_NUM.match(camera.value)
        if found:
            camera_name, channel_id = found.group("name"), channel_id or found.group("num")
    device = _first(f, "ipc name", "dvr name", "nvr name", "device name", "设备名称")
    event = _first(f, "event type", "事件类型", "报警类型")
    return VendorHints(
        vendor="hikvision",
        event_type=_clean(event.value if event else None),
        channel=_channel(channel_id),
        camera_name=_clean(camera_name) or _clean(device.value if device else None),
        event_time=_time_field(f, "event time", "事件时间", "报警时间"),
        device_name=_clean(device.value if device else None),
    )


_DAHUA_FILE = re.compile(r"^\d{14,17}ch(\d{1,3})", re.IGNORECASE)


def _dahua(m: _Mail) -> VendorHints | None:
    # Dahua / Amcrest (and OEMs): "Alarm Event:", "Alarm Input Channel:",
    # "Alarm Start Time(D/M/Y H:M:S):", "Alarm Device Name:"; subject "IPC Message".
    f = m.fields
    by_file = [x for x in (_DAHUA_FILE.match(n) for n in m.filenames) if x]
    if not ("alarm event" in f or "alarm input channel" in f or "alarm start time" in f or by_file):
        return None
    channel = _first(f, "alarm input channel", "alarm input channel no.", "alarm channel", "channel")
    camera = _first(f, "channel name", "alarm camera name", "camera name")
    device = _first(f, "alarm device name", "device name")
    event = _first(f, "alarm event", "event type", "alarm type")
    vendor = "reolink" if "reolink" in m.headers.get("from", "").lower() else "dahua"
    return VendorHints(
        vendor=vendor,
        event_type=_clean(event.value if event else None),
        channel=_channel(channel.value if channel else (by_file[0].group(1) if by_file else None)),
        camera_name=_clean((camera or device).value if (camera or device) else None),
        event_time=_time_field(f, "alarm start time", "alarm time", "event time"),
        device_name=_clean(device.value if device else None),
    )


def _swann(m: _Mail) -> VendorHints | None:
    # Swann NVR: "Channel Name [IP-CH1]: Front Yard", "AlarmType: Human",
    # "Event Type: Human and Vehicle", "Time: 2024-02-07 13:08:59".
    f = m.fields
    named = f.get("channel name")
    bracketed = named is not None and bool(named.bracket)
    if not (bracketed or "alarmtype" in f or "alert from your nvr/dvr" in m.body.lower()):
        return None
    event = _first(f, "alarmtype", "alarm type", "event type")
    device = _first(f, "device name")
    return VendorHints(
        vendor="swann",
        event_type=_clean(event.value if event else None),
        channel=_channel(named.bracket if named and named.bracket else None),
        camera_name=_clean(named.value if named else None),
        event_time=_time_field(f, "time", "alarm time", "event time"),
        device_name=_clean(device.value if device else None),
    )


_REOLINK_SUBJECT = re.compile(
    r"^(?P<what>[\w /-]{1,40}?) (?P<verb>Detected|Alert) (?:by|from|on) (?P<cam>.{1,100}?)"
    r"(?: at (?P<time>\d{4}[-/.]\d{1,2}[-/.]\d{1,2}[ T,]+[\d:]{3,8}))?$",
    re.IGNORECASE,
)
_REOLINK_BODY = re.compile(r"detected by camera \"(?P<cam>[^\"\n]{1,100})\"", re.IGNORECASE)


def _reolink(m: _Mail) -> VendorHints | None:
    # "Person Detected by My Camera at 2023/1/4 09:10:11";
    # body: 'A person was detected by camera "My Camera"!'.
    subj = _REOLINK_SUBJECT.match(m.subject)
    body = _REOLINK_BODY.search(m.body)
    from_reolink = "reolink" in m.headers.get("from", "").lower()
    if not (body or from_reolink or (subj and subj.group("time"))):
        return None
    camera = body.group("cam") if body else (subj.group("cam") if subj else None)
    event = f"{subj.group('what')} {subj.group('verb')}" if subj else None
    when = parse_camera_time(subj.group("time"), "YMD") if subj and subj.group("time") else None
    return VendorHints("reolink", _clean(event), None, _clean(camera), when)


def _dafang(m: _Mail) -> VendorHints | None:
    # Dafang-Hacks firmware: "Motion was detected", snapshots "<n>capture.jpg".
    sender = m.headers.get("from", "").lower() + m.headers.get("x-mailer", "").lower()
    captures = bool(m.filenames) and all(re.fullmatch(r"\d*capture\.jpg", n) for n in m.filenames)
    if "dafang" not in sender and not (captures and m.body.strip().lower() == "motion was detected"):
        return None
    return VendorHints("dafang", _clean(m.subject) or "Motion detected", None, None, None)


_GENERIC_CHANNEL = re.compile(r"\b(?:channel|chn|ch)[ \t]*[:#.]?[ \t]*(\d{1,3})\b", re.IGNORECASE)
_GENERIC_EVENT = re.compile(r"\bdetected[ \t]+(?P<what>[\w /-]{1,40}?)[ \t]+at[ \t]+\d", re.IGNORECASE)
_FILE_CHANNEL = re.compile(r"(?:^|[_-])CH[_-]?(\d{1,3})(?=[_.-])", re.IGNORECASE)


def _generic(m: _Mail) -> VendorHints | None:
    # Generic NVRs: "NVR alarm:FN3108XE channel:2 detected motion alarm at
    # 2020-12-21 02:01:38"; snapshots "SNAP_CH02_2020_12_21_02_01_38_41861.jpg".
    f = m.fields
    text = m.subject + "\n" + m.body[:4096]
    chan = _GENERIC_CHANNEL.search(text)
    by_file = [x for x in (_FILE_CHANNEL.search(n) for n in m.filenames) if x]
    channel = chan.group(1) if chan else (by_file[0].group(1) if by_file else None)
    event = _GENERIC_EVENT.search(text)
    event_type = event.group("what") if event else None
    field = _first(f, "event type", "alarm type", "event", "alarm event")
    if field is not None:
        event_type = field.value
    camera = _first(f, "camera name", "camera", "channel name")
    when = _time_field(f, "event time", "alarm time", "time", "date")
    when = when or parse_camera_time(m.subject) or parse_camera_time(m.body)
    if channel is None and event_type is None and camera is None:
        # Only a time, if anything: not enough to claim a vendor.
        return VendorHints(event_time=when) if when else None
    return VendorHints("generic-nvr", _clean(event_type), _channel(channel),
                       _clean(camera.value if camera else None), when)


_RECOGNISERS: tuple[Callable[[_Mail], VendorHints | None], ...] = (
    _hikvision, _dahua, _swann, _reolink, _dafang, _generic,
)


def extract_hints(
    subject: str,
    body: str,
    headers: Mapping[str, str] | None = None,
    filenames: Sequence[str] = (),
) -> VendorHints:
    """Return what the vendor recognisers find in a mail.

    ``headers`` maps lower-cased header names to decoded values (only
    ``from`` and ``x-mailer`` are looked at); ``filenames`` are the attachment
    names.  Never raises for odd input; returns an empty ``VendorHints`` when
    nothing is recognised.
    """
    mail = _Mail(subject, body, headers or {}, [n for n in filenames if n], _fields(body))
    for recognise in _RECOGNISERS:
        hints = recognise(mail)
        if hints is not None:
            return hints
    return VendorHints()


# --- the camera setup page's test mail ------------------------------------------------

_TEST_STRONG = re.compile(
    r"successfully set up and tested|\btest(?:ing)?[ -]?(?:e-?mail|mail|message)\b"
    r"|\b(?:e-?mail|mail|smtp)[ -]test\b|\btestmail\b|测试邮件|邮件测试",
    re.IGNORECASE,
)
_TEST_WEAK = re.compile(r"\btest(?:ing)?\b|测试", re.IGNORECASE)


def is_test_mail(subject: str, body: str, attachments: int, hints: VendorHints) -> bool:
    """Is this the "send test mail" button of a camera's setup page?

    Explicit wording (Reolink's "...successfully set up and tested the e-mail
    alert...", Hikvision/Dahua "Test mail"/"Test E-mail") is enough on its
    own.  A bare "test" counts only in a mail with no attachments and no
    recognised event type, so a real alarm from a camera named "Test" stays
    an alarm.
    """
    text = subject + "\n" + body[:4096]
    if _TEST_STRONG.search(text):
        return True
    return attachments == 0 and hints.event_type is None and bool(_TEST_WEAK.search(text))
