"""Site supervision in the store (issue 18), without a broker: when ``check_sites`` raises and closes
``site_offline``, and what counts as a sign of life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import peewee as pw
import pytest

from vmond.store.alarms import raise_alarm
from vmond.store.changes import Change
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.store.models import AlarmEvent, AuditEntry, Site
from vmond.store.sites import list_sites
from vmond.store.supervision import check_sites, sites_due

AT = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
DOMAIN = "central.local"
SILENCE = 300.0


@pytest.fixture
def db(store_db: pw.Database) -> pw.Database:
    """SQLite, then PostgreSQL (a central's two engines)."""
    return store_db


def receive(what: str, body: object, at: datetime, retained: bool = False) -> Change:
    change = Change()
    assert mirror_messages([SiteMessage("site-a", what, body, retained)], at, DOMAIN, {"site-a": "Site A"},
                           change) == 0
    return change


def status(at: datetime) -> dict[str, object]:
    return {"outbox_depth": 2, "version": "1.2", "at": at.isoformat(), "heartbeat_at": at.isoformat()}


def check(now: datetime, listening_since: datetime | None = AT) -> list[dict[str, object]]:
    return check_sites(DOMAIN, SILENCE, listening_since, None, Change(), now)


def offline_events() -> list[AlarmEvent]:
    return list(AlarmEvent.select().where(AlarmEvent.kind == "site_offline").order_by(AlarmEvent.id))


def test_silence_raises_once_and_a_message_closes_it(db: pw.Database) -> None:
    receive("status", status(AT), AT)
    assert sites_due(SILENCE, AT, AT + timedelta(seconds=299)) == (False, AT + timedelta(seconds=SILENCE))
    assert check(AT + timedelta(seconds=299)) == []
    [raised] = check(AT + timedelta(seconds=300))
    assert raised["kind"] == "site_offline" and raised["priority"] == 2 and raised["site"] == {"id": "site-a",
                                                                                               "name": "Site A"}
    assert raised["subject"] == ("No message from Site A (site-a) for 5m or longer; "
                                 "its last message came at 2026-12-06 20:00:00 UTC")
    event = AlarmEvent.get_by_id(raised["id"])
    assert event.site.key == "site-a" and event.remote_id is None  # the central's own, not a mirrored row
    assert check(AT + timedelta(hours=1)) == []  # once per loss
    assert [s["link"] for s in list_sites()] == ["silent"]

    receive("status", status(AT + timedelta(hours=2)), AT + timedelta(hours=2))
    [closed] = check(AT + timedelta(hours=2, seconds=1))
    assert closed["id"] == raised["id"] and closed["status"] == "dismissed" and "cleared" in closed["flags"]
    assert [a.detail["reason"] for a in AuditEntry.select().where(AuditEntry.action == "condition.cleared")] \
        == ["the site is online and sends messages again"]
    assert [s["link"] for s in list_sites()] == ["online"] and len(offline_events()) == 1


def test_offline_raises_at_once_and_online_closes_it(db: pw.Database) -> None:
    receive("available", "online", AT)
    receive("available", "offline", AT + timedelta(seconds=5))
    assert sites_due(SILENCE, AT, AT + timedelta(seconds=5))[0]
    [raised] = check(AT + timedelta(seconds=5))
    assert "is offline: the broker says so (its last will)" in raised["subject"]
    assert [(s["link"], s["offline_event_id"]) for s in list_sites()] == [("offline", raised["id"])]
    # A status without "online" (a retained copy, say) does not end an offline.
    receive("status", status(AT + timedelta(seconds=6)), AT + timedelta(seconds=6))
    assert check(AT + timedelta(seconds=7)) == []
    receive("available", "online", AT + timedelta(seconds=8))
    [closed] = check(AT + timedelta(seconds=8))
    assert closed["status"] == "dismissed"


def test_an_alarm_raised_for_it_stays_open_when_the_site_returns(db: pw.Database) -> None:
    receive("available", "offline", AT)
    [raised] = check(AT)
    raise_alarm(DOMAIN, raised["id"], None)
    receive("available", "online", AT + timedelta(minutes=1))
    [closed] = check(AT + timedelta(minutes=1))
    assert closed["status"] == "alarmed" and "cleared" in closed["flags"]


def test_no_silence_while_the_central_is_not_listening(db: pw.Database) -> None:
    receive("status", status(AT), AT)
    assert check(AT + timedelta(hours=1), listening_since=None) == []
    # Listening again since a minute: the site has until a silence after that.
    back = AT + timedelta(hours=1)
    assert check(back + timedelta(seconds=299), listening_since=back) == []
    assert len(check(back + timedelta(seconds=300), listening_since=back)) == 1


def test_a_retained_copy_is_mirrored_but_is_no_sign_of_life(db: pw.Database) -> None:
    receive("status", status(AT), AT)
    later = AT + timedelta(minutes=10)
    change = receive("status", {**status(AT), "outbox_depth": 7}, later, retained=True)
    site = Site.get(Site.key == "site-a")
    assert site.last_message_at == AT and site.status["outbox_depth"] == 7
    assert [a.data["last_message_at"] for a in change.announcements if a.type == "site.updated"] == [AT.isoformat()]
    receive("available", "online", later, retained=True)
    assert Site.get(Site.key == "site-a").last_message_at == AT
    assert len(check(later)) == 1
    # A site first heard of through a retained copy: that is its first sign.
    change = Change()
    mirror_messages([SiteMessage("site-b", "status", status(AT), True)], later, DOMAIN, {}, change)
    assert Site.get(Site.key == "site-b").last_message_at == later
