"""How a central reads the values in a site's messages (issue 18): typed, bounded, never trusted as sent.

A site (or anyone able to publish under its topics) may send anything: a string for an id, an integer beyond
SQLite's 64 bits, a megabyte of text, a time in the year 5 or 9999. Each reader gives a value a row can hold, or
its default; what the mirror cannot do without (an id) raises :class:`BadMessage`, and the message is dropped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

MAX_TEXT = 10_000  # a mirrored note or text longer than this is cut (a site's message is not trusted blindly)
MAX_ATTACHMENTS = 20  # media of an event beyond its MAX_IMAGES_PER_EVENT pictures and its clip
MAX_STEPS = 100  # an alarm's action plan steps, a plan's steps
MAX_FLAGS = 20
MAX_ROWS = 1000  # accounts, cameras in a site's config (an appliance has tens)
MAX_CONTACTS = 50  # an account's contacts
CLOCK_SKEW = timedelta(minutes=5)  # a site's times later than this past the central's clock are taken as now
MAX_INTEGER = 2**63 - 1  # SQLite's


class BadMessage(ValueError):
    """A site's message lacks what the mirror needs; it is logged and dropped (never retried forever)."""


def site_text(value: object, default: str = "", limit: int = MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else default


def site_obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def site_int(value: object) -> int | None:
    """An integer a row can hold (SQLite's are 64 bits); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_INTEGER <= value <= MAX_INTEGER:
        return value
    return None


def site_count(value: object, default: int) -> int:
    """A count or size: a non-negative integer, else *default*."""
    number = site_int(value)
    return number if number is not None and number >= 0 else default


def remote_id(item: object, what: str) -> int:
    if not isinstance(item, dict) or (remote := site_int(item.get("id"))) is None or remote <= 0:
        raise BadMessage(f"{what} without an id")
    return remote


def site_words(value: object, limit: int, allowed: tuple[str, ...] | None = None) -> list[str]:
    """A list of short words (flags, kinds): what is not one is left out, at most *limit* of them."""
    items = value if isinstance(value, list) else []
    words = [w for w in items if isinstance(w, str) and len(w) <= 50 and (allowed is None or w in allowed)]
    return words[:limit]


def site_list(value: object) -> list[Any]:
    """A list, or none."""
    return value if isinstance(value, list) else []


def site_detail(value: object) -> dict[str, Any]:
    """A trail entry's detail as the central keeps it: at most 20 plain values, texts cut."""
    scalars = {k: (v[:MAX_TEXT] if isinstance(v, str) else v) for k, v in site_obj(value).items()
               if len(k) <= 50 and (v is None or isinstance(v, (str, bool, float)) or site_int(v) is not None)}
    return dict(list(scalars.items())[:20])
