"""How an event is described to a guard, for the server-rendered pages (``web/static/wall.js`` says the same on
the wall's cards): the camera's own name and channel from the mail beside vmond's name for the camera, and the
camera's clock when it disagrees with the time of receipt, which is what orders everything."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from vmond.config.types import format_duration
from vmond.util.clock import utcnow
from vmond.util.kinds import SUPERVISION_KINDS

CLOCK_TOLERANCE = 60.0  # seconds the camera's clock may differ from the time of receipt without being shown


def source_label(event: dict[str, Any]) -> str:
    """What the mail says about which camera it was, e.g. ``CAM 2 Garage (ch 2)``; "" when it says nothing new."""
    name, channel = event.get("camera_name"), event.get("channel")
    camera = event.get("camera") or {}
    if name and name.casefold() == str(camera.get("name", "")).casefold():
        name = None  # the installer gave the camera the name it has itself
    if channel and "ch" not in channel.casefold():
        channel = f"ch {channel}"
    if name and channel:
        return f"{name} ({channel})"
    return name or channel or ""


def camera_clock(event: dict[str, Any]) -> str | None:
    """The event time by the camera's clock (ISO 8601) when it is more than a minute off the time of receipt."""
    try:
        told = datetime.fromisoformat(event["event_time"])
        received = datetime.fromisoformat(event["received_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return event["event_time"] if abs((told - received).total_seconds()) > CLOCK_TOLERANCE else None


# --- the wall's queue: how long an event has waited, said as web/static/wall.js says it -----------------------


def age_label(received_at: str, now: datetime | None = None) -> str:
    """How long ago vmond received it: ``12s ago``, ``3m 5s ago``, ``2h 4m ago``, ``3d ago``."""
    try:
        received = datetime.fromisoformat(received_at)
    except (TypeError, ValueError):
        return ""
    seconds = max(0, round(((now or utcnow()) - received).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s ago"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 86400}d ago"


def waited(received_at: str, now: datetime | None = None) -> float:
    """Seconds since vmond received it (the wall escalates an event past ``events.escalate_after``)."""
    try:
        return ((now or utcnow()) - datetime.fromisoformat(received_at)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


def queue_context(escalate_after: float) -> dict[str, Any]:
    """What the wall's template needs for the queue: the server's clock (a guard's PC may be off), and when an
    unhandled event escalates."""
    now = utcnow()
    return {"now": now, "now_iso": now.isoformat(), "escalate_after": escalate_after}


# Jinja2 filters may return anything (camera_clock gives None for "no clock"); aiohttp_jinja2 types them as str.
FILTERS: dict[str, Callable[..., Any]] = {"source_label": source_label, "camera_clock": camera_clock,
                                          "age_label": age_label, "waited": waited,
                                          # supervision: a camera's max_silence; vmond's own events
                                          "duration": format_duration,
                                          "supervision_kind": lambda kind: kind in SUPERVISION_KINDS}
