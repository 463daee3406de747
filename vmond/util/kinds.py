"""What an event is, in one word a guard and a central station can sort by: its *kind*, and the priority that
follows from it.

Cameras name the same thing many ways ("Person", "Person Detected", "Human", "Pedestrian", Hikvision's
"Region Entrance Detection", Dahua's "CrossLineDetection", Chinese firmware's "越界侦测"). :func:`event_kind`
maps the event type the mail gave (or, failing that, its subject) to one of :data:`CAMERA_KINDS`. The store calls it
when it records an event and when migration 8 fills in the kind of events recorded before; it is a pure
function of text, so both give the same answer.

Priorities run from 1 (most urgent) to 5; :data:`DEFAULT_PRIORITIES` is what ``events.priorities`` starts from
and ``accounts[].priorities`` overrides per account (:func:`priority_of`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CAMERA_KINDS = ("person", "vehicle", "face", "intrusion", "line_crossing", "tamper", "video_loss", "motion", "other")
# Supervision: what vmond raises itself when something that should happen does not. A camera silent for longer than
# its max_silence; on a central, a site that stopped reporting; the appliance's own trouble (disk below
# storage.min_free_space, the MQTT broker unreachable, clips failing again and again, the spool not draining).
SUPERVISION_KINDS = ("camera_silent", "site_offline", "disk_low", "mqtt_down", "clips_failing", "spool_stuck")
KINDS = CAMERA_KINDS + SUPERVISION_KINDS
DEFAULT_PRIORITIES: dict[str, int] = {
    "intrusion": 1, "person": 1, "tamper": 1,
    "line_crossing": 2, "vehicle": 2, "face": 2, "video_loss": 2,
    "motion": 3, "other": 3,
    # Alarms that may be going unseen come first; a camera or site gone quiet next; a failing clip maker last.
    "spool_stuck": 1, "disk_low": 1,
    "camera_silent": 2, "site_offline": 2, "mqtt_down": 2,
    "clips_failing": 3,
}
HIGHEST, LOWEST = 1, 5

# Checked in this order, so that the more telling word wins in "Intrusion (Human)" or "Human and Vehicle": what
# happened to the camera, then where someone went, then who it was, and plain motion last.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern)) for kind, pattern in (
    ("video_loss", r"\bvideo ?loss|\bsignal ?loss|\bloss of video|视频丢失|视频信号丢失"),
    ("tamper", r"\btamper|\bvideo ?blind|\bscene ?change|\bdefocus|\bcamera ?mask|\bocclusion|\bvideo ?mask"
               r"|遮挡|场景变更|虚焦"),
    ("line_crossing", r"\bline ?cross|\bcross ?line|\btrip ?wire|\bvirtual ?fence|\bline detection|越界"),
    ("intrusion", r"\bintrusion|\bintruder|\bregion ?(?:entrance|entering|exit)|\bfield ?detection"
                  r"|\bcross ?region|\bperimeter|\bzone ?(?:entry|alarm)|入侵|进入区域|离开区域"),
    ("face", r"\bface|人脸"),
    ("person", r"\bperson|\bpeople|\bhuman|\bpedestrian|\bbody\b|人形|行人|人体"),
    ("vehicle", r"\bvehicle|\bcar\b|\bcars\b|\btruck|\bmotorcycle|\bbicycle|车辆|机动车"),
    ("motion", r"\bmotion|\bvmd\b|\bmovement|\bmoving|\bpir\b|移动侦测|动检"),
))
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")  # "CrossLineDetection" -> "Cross Line Detection"
_SEPARATORS = re.compile(r"[_\-./:]+")


def _words(text: str) -> str:
    return _SEPARATORS.sub(" ", _CAMEL.sub(" ", text[:400])).casefold()


def kind_of_text(text: str | None) -> str | None:
    """The kind one piece of camera text names, or None when it names none."""
    if not text:
        return None
    words = _words(text)
    return next((kind for kind, pattern in _RULES if pattern.search(words)), None)


def event_kind(event_type: str | None, subject: str | None = None) -> str:
    """The kind of an event: from its event type, else from the mail's subject, else ``other``."""
    return kind_of_text(event_type) or kind_of_text(subject) or "other"


def priority_of(kind: str, priorities: Mapping[str, int] | None = None,
                account: Mapping[str, int] | None = None) -> int:
    """The priority of *kind*: the account's own, else ``events.priorities`` (*priorities*), else the default."""
    for table in (account, priorities):
        if table and kind in table:
            return int(table[kind])
    return DEFAULT_PRIORITIES.get(kind, DEFAULT_PRIORITIES["other"])
