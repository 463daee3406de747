"""The clock: the current time as every part of vmond keeps it (timezone-aware, in UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind of datetime the store keeps)."""
    return datetime.now(UTC)
