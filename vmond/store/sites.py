"""A central station's sites (issue 18): one ``site`` row per appliance it mirrors, and what its link says.

Every message from a site counts as a sign of life (``last_message_at``); its retained ``status`` carries the
heartbeat and its figures, its ``available`` topic says ``online`` or (the broker's last will) ``offline``.
Synchronous, on a database thread, inside the caller's transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from vmond.store.changes import Change
from vmond.store.models import AlarmEvent, Camera, Site, SupervisionCondition, utcnow


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# A site's times outside these are not times it could have (a store keeps four-digit years, in UTC).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_SITES = 1000  # rows a central keeps for sites: `sites: auto` must not let anyone grow the table without end
# A site's last_message_at is moved only when it moved by more than this: several central nodes would otherwise
# write the same site rows for every message (central.site_silence is minutes, a second does not matter).
HEARD_STEP = timedelta(seconds=1)


class TooManySites(ValueError):
    """A message from a site the central has no room left for; dropped like any message it cannot take."""


def parse_time(value: object, not_after: datetime | None = None) -> datetime | None:
    """An ISO 8601 time from a site's message, in UTC; None when absent, not a time with a zone, or out of any
    range a site could mean. *not_after*: a later time (a site's clock, or a hostile site) is taken as that."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if not EARLIEST <= parsed < LATEST:
        return None
    return parsed if not_after is None else min(parsed, not_after)


def ensure_site(key: str, name: str | None = None) -> Site:
    """The site *key*'s row, created on its first message; *name* (the configured or announced one) kept."""
    site = Site.get_or_none(Site.key == key)
    if site is None:
        if Site.select().count() >= MAX_SITES:
            raise TooManySites(f"already {MAX_SITES} sites here: site {key} is not mirrored")
        return Site.create(key=key, name=name or key)
    if name and site.name != name:
        site.name = name
        site.save()
    return site


def ensure_sites(sites: list[tuple[str, str | None]]) -> None:
    """The configured sites' rows (id, name), so that one that never reports is supervised too."""
    for key, name in sites:
        ensure_site(key, name)


def site_ref(site: Site | None) -> dict[str, Any] | None:
    """What an Event or Alarm names of its site: ``{"id", "name"}`` (None on an appliance's own rows)."""
    return None if site is None else {"id": site.key, "name": site.name}


def site_refs(site_ids: set[int | None]) -> dict[int, dict[str, Any]]:
    """``{site row id: site_ref}`` for *site_ids*, in one query."""
    wanted = [i for i in site_ids if i is not None]
    if not wanted:
        return {}
    return {s.id: {"id": s.key, "name": s.name} for s in Site.select().where(Site.id.in_(wanted))}


def site_dict(site: Site) -> dict[str, Any]:
    """A site as ``GET /api/sites`` lists it. ``link``: ``online``, ``offline`` (its ``available`` says so),
    ``silent`` (not offline by its word, but a ``site_offline`` event is open: nothing heard for
    ``central.site_silence``) or ``unknown`` (never heard from); ``offline_event_id``: that open event."""
    status = site.status or {}
    condition = SupervisionCondition.get_or_none(SupervisionCondition.subject == f"site:{site.key}")
    link = ("offline" if site.online is False else "silent" if condition is not None
            else "unknown" if site.online is None and site.last_message_at is None else "online")
    return {
        "id": site.key,
        "name": site.name,
        "online": bool(site.online),
        "available": None if site.online is None else ("online" if site.online else "offline"),
        "link": link,
        "offline_event_id": None if condition is None else condition.event_id,
        "last_message_at": _iso(site.last_message_at),
        "heartbeat_at": _iso(site.heartbeat_at),
        "version": site.version or status.get("version"),
        "timezone": site.timezone,
        "outbox_depth": status.get("outbox_depth"),
        "oldest_undelivered_age_s": status.get("oldest_undelivered_age_s"),
        "disk_free_bytes": status.get("disk_free_bytes"),
        "config_at": _iso(site.config_at),
        "cameras": Camera.select().where(Camera.site == site).count(),
        "active_events": AlarmEvent.select().where((AlarmEvent.site == site) & (AlarmEvent.status == "active")
                                                   & ~AlarmEvent.off_wall & ~AlarmEvent.is_test).count(),
    }


def list_sites() -> list[dict[str, Any]]:
    return [site_dict(site) for site in Site.select().order_by(Site.name, Site.key)]


def site_choices() -> list[dict[str, Any]]:
    """Every site's ``{"id", "name"}``, by name (for the wall's filter)."""
    return [{"id": site.key, "name": site.name}
            for site in Site.select(Site.key, Site.name).order_by(Site.name, Site.key)]


def announce_site(change: Change | None, site: Site) -> None:
    """Tell the dashboards (``site.updated``, data: :func:`site_dict`) that *site*'s link or figures changed."""
    if change is not None:
        change.announce("site.updated", site_dict(site), about=("site", site.id))


def note_message(key: str, at: datetime, name: str | None = None, change: Change | None = None) -> Site:
    """A message from *key* arrived at *at*: it is alive."""
    site = ensure_site(key, name)
    site.last_message_at = at
    # This column only: saving the whole row would write its status (the site's, any size) for every message.
    Site.update(last_message_at=at).where(Site.id == site.id).execute()
    return site


def note_heard(heard: dict[str, datetime]) -> int:
    """Sites heard from (key: when): each one's ``last_message_at`` moved forward to that time, unless it is
    already within :data:`HEARD_STEP` of it. Returns how many rows were written.

    A row another node has just moved is left alone (not written, not locked). On PostgreSQL the rows to move are
    locked first in key order, as every node does: two nodes doing this at once wait for each other briefly, never
    in a deadlock (an UPDATE locks them in whatever order it finds them). ``FOR NO KEY UPDATE``, the lock such an
    UPDATE takes anyway: ``FOR UPDATE`` would also wait for (and deadlock with) another node's open batch, whose
    events' foreign keys hold their site rows ``FOR KEY SHARE``."""
    locking = bool(getattr(Site._meta.database, "for_update", False))  # SQLite: one writer, no row locks
    written = 0
    by_time: dict[datetime, list[str]] = {}
    for key, at in heard.items():
        by_time.setdefault(at, []).append(key)
    for at, keys in sorted(by_time.items()):
        keys.sort()
        for start in range(0, len(keys), 500):  # a few keys a statement: SQLite bounds a statement's parameters
            stale = (Site.key.in_(keys[start:start + 500])
                     & (Site.last_message_at.is_null() | (Site.last_message_at < at - HEARD_STEP)))
            if locking:
                ids = [row.id for row in Site.select(Site.id).where(stale).order_by(Site.key)
                       .for_update("FOR NO KEY UPDATE")]  # type: ignore[arg-type]  # a clause: peewee takes it, its stub says bool
                if not ids:
                    continue
                stale = Site.id.in_(ids)
            written += Site.update(last_message_at=at).where(stale).execute()
    return written


def note_status(key: str, status: dict[str, Any], at: datetime, name: str | None = None,
                change: Change | None = None) -> Site:
    """The site's retained status (its heartbeat and figures)."""
    site = note_message(key, at, name)
    site.status = status
    # Never later than now: a site's clock ahead (or a lie) must not keep it "alive" past its silence.
    site.heartbeat_at = parse_time(status.get("heartbeat_at"), at) or parse_time(status.get("at"), at) or at
    if isinstance(status.get("version"), str):
        site.version = status["version"][:100]
    site.save()
    announce_site(change, site)
    return site


def note_available(key: str, online: bool, at: datetime, name: str | None = None,
                   change: Change | None = None) -> Site:
    """The site's ``available`` topic: ``online``, or ``offline`` (its last will, or its own goodbye)."""
    site = ensure_site(key, name)
    if online:
        site.last_message_at = at
    site.online = online
    site.save()
    announce_site(change, site)
    return site


def now() -> datetime:
    return utcnow()
