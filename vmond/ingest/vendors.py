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
from dataclasses import dataclass, replace
from datetime import datetime

from vmond.ingest.vendorrules import (
    Field,
    channel_value,
    clean_value,
    field_phase,
    first_field,
    label_value,
    parse_camera_time,
    parse_fields,
    split_phase,
    time_field,
)

__all__ = ["SEND_TEST_HEADER", "SEND_TEST_VALUE", "VendorHints", "extract_hints", "is_test_mail",
           "parse_camera_time", "subject_event_type"]


@dataclass(frozen=True)
class VendorHints:
    """What the vendor recognisers could extract; every field may be None."""

    vendor: str | None = None
    event_type: str | None = None
    channel: str | None = None
    camera_name: str | None = None
    event_time: datetime | None = None
    device_name: str | None = None
    phase: str | None = None  # "start" / "stop" for cameras that mail both ends of one alarm


# --- recognisers -------------------------------------------------------------------

@dataclass(frozen=True)
class _Mail:
    subject: str
    body: str
    headers: Mapping[str, str]
    filenames: Sequence[str]
    fields: Mapping[str, Field]


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
    camera = first_field(f, "channel name", "通道名称", "camera name")
    channel = first_field(f, "channel number", "channel no.", "channel no", "通道号")
    camera_name = camera.value if camera else None
    channel_id = channel.value if channel else None
    if camera is not None and camera.paren.upper() == "NUM":
        found = _NAME_NUM.match(camera.value)
        if found:
            camera_name, channel_id = found.group("name"), channel_id or found.group("num")
    device = first_field(f, "ipc name", "dvr name", "nvr name", "device name", "设备名称")
    event = first_field(f, "event type", "事件类型", "报警类型")
    return VendorHints(
        vendor="hikvision",
        event_type=clean_value(event.value if event else None),
        channel=channel_value(channel_id),
        camera_name=clean_value(camera_name) or clean_value(device.value if device else None),
        event_time=time_field(f, "event time", "事件时间", "报警时间"),
        device_name=clean_value(device.value if device else None),
    )


_DAHUA_FILE = re.compile(r"^\d{14,17}ch(\d{1,3})", re.IGNORECASE)


def _dahua(m: _Mail) -> VendorHints | None:
    # Dahua / Amcrest (and OEMs): "Alarm Event:", "Alarm Input Channel:",
    # "Alarm Start Time(D/M/Y H:M:S):", "Alarm Device Name:"; subject "IPC Message".
    f = m.fields
    by_file = [x for x in (_DAHUA_FILE.match(n) for n in m.filenames) if x]
    if not ("alarm event" in f or "alarm input channel" in f or "alarm start time" in f or by_file):
        return None
    channel = first_field(f, "alarm input channel", "alarm input channel no.", "alarm channel", "channel")
    camera = first_field(f, "channel name", "alarm camera name", "camera name")
    device = first_field(f, "alarm device name", "device name")
    event = first_field(f, "alarm event", "event type", "alarm type")
    vendor = "reolink" if "reolink" in m.headers.get("from", "").lower() else "dahua"
    return VendorHints(
        vendor=vendor,
        event_type=clean_value(event.value if event else None),
        channel=channel_value(channel.value if channel else (by_file[0].group(1) if by_file else None)),
        camera_name=clean_value(named.value if (named := camera or device) else None),
        event_time=time_field(f, "alarm start time", "alarm time", "event time"),
        device_name=clean_value(device.value if device else None),
    )


def _swann(m: _Mail) -> VendorHints | None:
    # Swann NVR: "Channel Name [IP-CH1]: Front Yard", "AlarmType: Human",
    # "Event Type: Human and Vehicle", "Time: 2024-02-07 13:08:59".
    f = m.fields
    named = f.get("channel name")
    bracketed = named is not None and bool(named.bracket)
    if not (bracketed or "alarmtype" in f or "alert from your nvr/dvr" in m.body.lower()):
        return None
    event = first_field(f, "alarmtype", "alarm type", "event type")
    device = first_field(f, "device name")
    return VendorHints(
        vendor="swann",
        event_type=clean_value(event.value if event else None),
        channel=channel_value(named.bracket if named and named.bracket else None),
        camera_name=clean_value(named.value if named else None),
        event_time=time_field(f, "time", "alarm time", "event time"),
        device_name=clean_value(device.value if device else None),
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
    return VendorHints("reolink", clean_value(event), None, clean_value(camera), when)


def _dafang(m: _Mail) -> VendorHints | None:
    # Dafang-Hacks firmware: "Motion was detected", snapshots "<n>capture.jpg".
    sender = m.headers.get("from", "").lower() + m.headers.get("x-mailer", "").lower()
    captures = bool(m.filenames) and all(re.fullmatch(r"\d*capture\.jpg", n) for n in m.filenames)
    if "dafang" not in sender and not (captures and m.body.strip().lower() == "motion was detected"):
        return None
    return VendorHints("dafang", clean_value(m.subject) or "Motion detected", None, None, None)


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
    field = first_field(f, "event type", "alarm type", "event", "alarm event")
    if field is not None:
        event_type = field.value
    camera = first_field(f, "camera name", "camera", "channel name")
    camera_name = camera.value if camera else None
    if camera is not None and camera.paren.upper() == "NUM":
        # DVRs write "CAMERA NAME(NUM): CAM 2 Garage(A2)": the name, then the channel's own id.
        found = _NAME_NUM.match(camera.value)
        if found:
            camera_name, channel = found.group("name"), channel or found.group("num")
    when = time_field(f, "event time", "alarm time", "time", "date")
    when = when or parse_camera_time(m.subject) or parse_camera_time(m.body)
    if channel is None and event_type is None and camera is None:
        # Only a time, if anything: not enough to claim a vendor.
        return VendorHints(event_time=when) if when else None
    return VendorHints("generic-nvr", clean_value(event_type), channel_value(channel),
                       clean_value(camera_name), when)


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
    mail = _Mail(subject, body, headers or {}, [n for n in filenames if n], parse_fields(body))
    for recognise in _RECOGNISERS:
        hints = recognise(mail)
        if hints is not None:
            break
    else:
        hints = VendorHints()
    # The phase applies to every vendor's wording, so it is read once here, after
    # the recogniser (whose camera name keeps "...from Back End" from being a stop).
    event, phase = split_phase(hints.event_type) if hints.event_type else (None, None)
    phase = field_phase(mail.fields) or phase or _subject_phase(subject, hints)[1]
    # The camera's own name and channel are shown to guards next to vmond's name for the camera: short, one
    # line, nothing that reorders or hides the text around them.
    return replace(hints, event_type=event, phase=phase, camera_name=label_value(hints.camera_name),
                   channel=label_value(hints.channel), device_name=label_value(hints.device_name))


def _subject_phase(subject: str, hints: VendorHints) -> tuple[str, str | None]:
    """``split_phase`` of the subject, unless its last words are the camera's name."""
    base, phase = split_phase(subject)
    if phase is not None:
        tail = subject.rstrip(" \t.!)]>").casefold()
        if any(name and tail.endswith(name.casefold()) for name in (hints.camera_name, hints.device_name)):
            return subject, None
    return base, phase


def subject_event_type(subject: str, hints: VendorHints) -> str | None:
    """The event type of a mail no recogniser typed: its subject less a trailing phase word.

    ``parse_mail`` falls back to the subject; without this, "Motion Detection
    Start" and "Motion Detection Stop" subjects would be two event types.
    """
    return _subject_phase(subject, hints)[0] or None


# --- the camera setup page's test mail ------------------------------------------------

_TEST_STRONG = re.compile(
    r"successfully set up and tested|\btest(?:ing)?[ -]?(?:e-?mail|mail|message)\b"
    r"|\b(?:e-?mail|mail|smtp)[ -]test\b|\btestmail\b|测试邮件|邮件测试",
    re.IGNORECASE,
)
_TEST_WEAK = re.compile(r"\btest(?:ing)?\b|测试", re.IGNORECASE)


# ``vmond send-test`` marks its test mail with this header: unlike wording, no camera's mail says it by chance.
SEND_TEST_HEADER = "X-Vmond-Test"
SEND_TEST_VALUE = "send-test"


def is_test_mail(subject: str, body: str, attachments: int, hints: VendorHints,
                 headers: Mapping[str, str] | None = None) -> bool:
    """Is this the "send test mail" button of a camera's setup page (or ``vmond send-test``)?

    Explicit wording (Reolink's "...successfully set up and tested the e-mail
    alert...", Hikvision/Dahua "Test mail"/"Test E-mail") is enough on its
    own.  A bare "test" counts only in a mail with no attachments and no
    recognised event type, so a real alarm from a camera named "Test" stays
    an alarm.  ``headers`` (lower-cased names) may carry :data:`SEND_TEST_HEADER`.
    """
    marker = (headers or {}).get(SEND_TEST_HEADER.lower(), "")
    if marker.strip().lower() == SEND_TEST_VALUE:
        return True
    text = subject + "\n" + body[:4096]
    if _TEST_STRONG.search(text):
        return True
    return attachments == 0 and hints.event_type is None and bool(_TEST_WEAK.search(text))
