"""The central's mirror in the store (issue 18): a site's messages, delivered again, late, or broken, leave the
mirror right: once per row, never older, a bad message dropped alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import peewee as pw
import pytest

from vmond.store.changes import Change
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.store.models import Account, Alarm, AlarmEvent, AlarmNote, AuditEntry, Camera, Contact, Media, Site

AT = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
DOMAIN = "central.local"


@pytest.fixture
def db(store_db: pw.Database) -> pw.Database:
    """SQLite, then PostgreSQL (a central's two engines)."""
    return store_db


def config(cameras: list[dict[str, Any]] | None = None, phone: str = "+15550100") -> dict[str, Any]:
    return {"site": {"id": "site-a", "name": "Site A", "timezone": "Europe/Berlin"}, "version": "1.0", "at": "x",
            "accounts": [{"id": 3, "name": "Shop", "address": "1 Main St", "notes": "", "action_plan":
                          [{"text": "Call the keyholder"}], "schedule": None,
                          "contacts": [{"name": "Jane", "phone": phone, "email": None, "role": "keyholder",
                                        "priority": 1}],
                          "monitoring": {"monitored": True, "until": None, "by": "always", "manual": None}}],
            "cameras": cameras if cameras is not None else [
                {"id": 7, "name": "Door", "account_id": 3, "active": True, "max_silence": None,
                 "snoozed": False, "snoozed_until": None},
                {"id": 8, "name": "Yard", "account_id": 3, "active": True, "max_silence": None,
                 "snoozed": False, "snoozed_until": None}]}


def event(updated: datetime = AT, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {"id": 41, "uid": "site-a:41", "camera": {"id": 7, "name": "Door", "smtp_address": "door@x"},
            "account": {"id": 3, "name": "Shop"}, "received_at": AT.isoformat(), "updated_at": updated.isoformat(),
            "event_time": AT.isoformat(), "event_type": "Intrusion", "subject": "Alarm", "status": status,
            "kind": "intrusion", "priority": 1, "is_test": False, "flags": [], "mail_count": 1,
            "images": [{"id": 90, "url": "/media/90", "thumbnail_url": "/media/90/thumbnail", "width": 4,
                        "height": 3, "content_type": "image/jpeg", "bytes": 10, "sha256": "a" * 64}],
            "video": {"state": "ready", "url": "/media/91", "id": 91, "content_type": "video/mp4", "bytes": 99},
            **extra}


def alarm(last_action: dict[str, Any], state: str = "open") -> dict[str, Any]:
    return {"id": 5, "uid": "site-a:5", "event_id": 41, "state": state, "opened_at": AT.isoformat(),
            "opened_by": {"id": 2, "username": "alice"}, "acknowledged_at": None, "acknowledged_by": None,
            "resolved_at": None, "resolved_by": None, "resolution": None,
            "steps": [{"n": 1, "text": "Call the keyholder", "done_by": {"id": None,
                                                                        "username": "op1 at Central One"},
                       "done_at": AT.isoformat()}],
            "last_action": last_action}


def mirror(*messages: tuple[str, Any], change: Change | None = None) -> int:
    return mirror_messages([SiteMessage("site-a", what, body) for what, body in messages], AT, DOMAIN, {},
                           change=change)


def test_config_mirrors_accounts_contacts_and_cameras_and_retires_what_it_no_longer_lists(
        db: pw.Database) -> None:
    assert mirror(("config", config())) == 0
    site = Site.get(Site.key == "site-a")
    assert (site.name, site.timezone, site.version) == ("Site A", "Europe/Berlin", "1.0")
    account = Account.get(Account.site == site)
    assert (account.remote_id, account.name, account.action_plan) == (3, "Shop", [{"text": "Call the keyholder",
                                                                                    "kinds": []}])
    assert sorted(c.name for c in Camera.select().where(Camera.site == site)) == ["Door", "Yard"]
    mirror(("config", config(cameras=[{"id": 7, "name": "Front door", "account_id": 3, "active": True}],
                             phone="+15550199")))
    assert [c.phone for c in Contact.select().where(Contact.account == account)] == ["+15550199"]
    cameras = {c.remote_id: c for c in Camera.select().where(Camera.site == site)}
    assert cameras[7].name == "Front door" and cameras[7].active and not cameras[8].active
    assert Account.select().count() == 1  # the same rows, not new ones


def test_an_event_is_mirrored_once_and_an_older_copy_does_not_undo_a_newer_one(db: pw.Database) -> None:
    change = Change()
    mirror(("config", config()), ("events", {"type": "new", "event": event()}), change=change)
    row = AlarmEvent.get()
    assert (row.remote_id, row.kind, row.priority, row.status) == (41, "intrusion", 1, "active")
    assert [a.type for a in change.announcements if a.type.startswith("event.")] == ["event.created"]
    media = {m.remote_id: m for m in Media.select()}
    assert media[90].kind == "image" and media[90].sha256 == "a" * 64 and media[90].path == ""
    assert media[91].kind == "video"
    later = AT + timedelta(seconds=30)
    mirror(("events", {"type": "update", "event": event(updated=later, status="dismissed")}))
    mirror(("events", {"type": "new", "event": event()}))  # the broker's redelivery of the first message
    assert AlarmEvent.select().count() == 1 and Media.select().count() == 2
    assert AlarmEvent.get().status == "dismissed"


def test_an_event_before_the_sites_config_creates_its_camera_which_the_config_completes(
        db: pw.Database) -> None:
    mirror(("events", {"type": "new", "event": event()}))
    assert Camera.get().name == "Door" and Account.get().name == "Shop"
    mirror(("config", config()))
    assert Camera.select().count() == 2 and Account.select().count() == 1


def test_a_broken_message_is_dropped_alone(db: pw.Database) -> None:
    dropped = mirror(("events", {"type": "new"}), ("events", {"type": "new", "event": {"id": "x"}}),
                     ("events", {"type": "new", "event": event()}), ("alarms", {"alarm": []}))
    assert dropped == 3 and AlarmEvent.select().count() == 1


def test_an_alarm_and_its_note_are_mirrored_once_with_who_did_it_named_at_the_site(
        db: pw.Database) -> None:
    mirror(("config", config()), ("events", {"type": "new", "event": event(status="alarmed")}))
    opened = {"action": "alarm.open", "detail": {"event_id": 41}}
    note = {"action": "alarm.note", "detail": {"note_id": 12, "text": "Police called"},
            "by": {"id": 3, "username": "bob"}}
    mirror(("alarms", {"type": "new", "alarm": alarm(opened)}))
    mirror(("alarms", {"type": "update", "alarm": alarm(note)}), ("alarms", {"type": "update", "alarm": alarm(note)}))
    row = Alarm.get()
    assert row.remote_by == {"opened": "alice at Site A"}
    assert row.steps[0]["done_remote"] == "op1 at Central One"  # a central's operator keeps their name
    assert [n.text for n in AlarmNote.select()] == ["Police called"]
    trail = list(AuditEntry.select().order_by(AuditEntry.id))
    assert [a.action for a in trail] == ["alarm.open", "alarm.note"]
    assert trail[1].detail["remote"]["user"] == "bob at Site A"  # who wrote the note, named at the site


def test_an_alarm_about_an_event_not_mirrored_is_skipped(db: pw.Database) -> None:
    assert mirror(("alarms", {"type": "new", "alarm": alarm({"action": "alarm.open", "detail": {}})})) == 0
    assert Alarm.select().count() == 0


def test_status_and_availability_tell_the_sites_link(db: pw.Database) -> None:
    mirror(("available", "online"), ("status", {"outbox_depth": 4, "heartbeat_at": AT.isoformat(),
                                                 "version": "2.0", "at": AT.isoformat()}))
    site = Site.get()
    assert site.online is True and site.status["outbox_depth"] == 4 and site.version == "2.0"
    assert site.heartbeat_at == AT
    mirror(("available", "offline"))
    assert Site.get().online is False
