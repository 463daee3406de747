"""The central's mirror against a hostile or broken site (issue 18): whatever a site publishes, each message is
mirrored bounded or dropped alone, the ones after it still are, and what it leaves readable by the central's pages.
Store level (fast); tests/test_central_hostile.py sends the same through a broker to a running central."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from test_mirror_store import AT, DOMAIN, alarm, config, event

from vmond.store import mirror as mirror_module
from vmond.store import sites
from vmond.store.centralcommands import queue_command
from vmond.store.db import open_sqlite
from vmond.store.events import MAX_IMAGES_PER_EVENT, list_events
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.store.models import (
    Account,
    Alarm,
    AlarmEvent,
    AlarmNote,
    AuditEntry,
    Camera,
    CentralCommand,
    Contact,
    Media,
    Site,
    User,
)
from vmond.store.sites import list_sites

GOOD = ("events", {"type": "new", "event": event()})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[pw.SqliteDatabase]:
    database = open_sqlite(tmp_path / "vmond.db")
    yield database
    database.close()


def mirror(*messages: tuple[str, Any], site: str = "site-a") -> int:
    return mirror_messages([SiteMessage(site, what, body) for what, body in messages], AT, DOMAIN, {})


def new(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "events", {"type": "new", "event": event(**fields)}


def test_integers_beyond_sqlites_64_bits_drop_their_message_alone_or_are_bounded(db: pw.SqliteDatabase) -> None:
    dropped = mirror(new(id=2**70), new(id=-3), new(id=42, mail_count=2**64, priority=-(2**80),
                                                   images=[{"id": 95, "bytes": 2**70, "width": 10**30}]), GOOD)
    assert dropped == 2
    assert sorted(e.remote_id for e in AlarmEvent.select()) == [41, 42]
    bounded = AlarmEvent.get(AlarmEvent.remote_id == 42)
    assert bounded.mail_count == 1 and bounded.priority == 3
    media = Media.get(Media.remote_id == 95)
    assert media.bytes == 0 and media.width is None


def test_absurd_times_neither_break_the_central_nor_put_an_event_above_the_others(db: pw.SqliteDatabase) -> None:
    mirror(new(id=42, received_at="0005-01-01T00:00:00+00:00", updated_at="0005-01-01T00:00:00Z"),
           new(id=43, received_at="9999-12-31T23:00:00-05:00", event_time="0001-01-01T00:00:00+01:00"),
           new(id=44, received_at="2999-01-01T00:00:00Z", updated_at="2999-01-01T00:00:00Z"),
           ("status", {"heartbeat_at": "2999-01-01T00:00:00Z"}))
    listed = {e["id"]: e for e in list_events(DOMAIN)}  # every row still reads back
    assert len(listed) == 3
    for row in AlarmEvent.select():
        assert AT - timedelta(days=1) < row.received_at <= AT + timedelta(minutes=5)
        assert row.updated_at <= AT + timedelta(minutes=5)
    assert Site.get().heartbeat_at == AT  # a heartbeat "from the future" must not keep a site alive
    # The event "from 2999" can still be changed by the site's next update.
    mirror(new(id=44, status="dismissed", updated=AT + timedelta(minutes=6)))
    assert AlarmEvent.get(AlarmEvent.remote_id == 44).status == "dismissed"


def test_unknown_kinds_statuses_and_out_of_range_priorities_are_read_as_something_the_central_knows(
        db: pw.SqliteDatabase) -> None:
    mirror(new(kind="<script>" * 1000, status="exploded", priority=99, flags=["x" * 10_000, 5, "silent"] * 50,
               video="not an object"))
    row = AlarmEvent.get()
    assert (row.kind, row.status, row.priority) == ("other", "active", 5)
    assert row.flags == ["silent"] * 20 and row.video_state == "none"


def test_an_event_with_ten_thousand_images_keeps_as_many_as_a_sites_own_event_can_have(
        db: pw.SqliteDatabase) -> None:
    images = [{"id": 1000 + n, "content_type": "image/jpeg"} for n in range(10_000)]
    megabyte = "x" * 1_000_000
    attachments = [{"id": 20_000 + n, "name": megabyte} for n in range(1000)]
    assert mirror(new(images=images, attachments=attachments, subject="s" * 2_000_000)) == 0
    assert Media.select().where(Media.kind == "image").count() == MAX_IMAGES_PER_EVENT
    assert Media.select().count() < MAX_IMAGES_PER_EVENT + 30
    assert max(len(m.original_name or "") for m in Media.select()) <= 200
    assert len(AlarmEvent.get().subject) <= 10_000


def test_a_config_of_thousands_of_cameras_and_contacts_is_bounded(db: pw.SqliteDatabase) -> None:
    doc = config(cameras=[{"id": n, "name": f"cam {n}", "account_id": 3, "max_silence": float("inf")}
                          for n in range(1, 1201)])
    doc["accounts"][0]["contacts"] = [{"name": f"c{n}", "priority": 2**70} for n in range(500)]
    doc["accounts"][0]["action_plan"] = [{"text": "t", "kinds": {"person": 1}}, {"text": "u", "kinds": "person"},
                                         {"text": "v", "kinds": ["person", "<b>", ["x"]]}]
    assert mirror(("config", doc)) == 0
    assert 0 < Camera.select().count() <= 1000 and Contact.select().count() <= 50
    assert all(c.max_silence is None for c in Camera.select())
    assert [s["kinds"] for s in Account.get().action_plan] == [[], [], ["person"]]
    assert mirror(("config", config())) == 0  # the next config retires what it no longer lists
    assert Camera.select().where(Camera.active).count() == 2


def test_a_site_reaches_none_of_another_sites_rows(db: pw.SqliteDatabase) -> None:
    mirror(("config", config()), new(status="alarmed"))
    mirror(("alarms", {"type": "new", "alarm": alarm({"action": "alarm.open", "detail": {}})}), site="site-b")
    assert Alarm.select().count() == 0  # site-b has no event 41
    site_a = Site.get(Site.key == "site-a")
    operator = User.create(username="op", password_hash="x", role="guard")
    command = queue_command(site_a, "dismiss", {"event_id": 41}, {}, (operator.id, "op"), "Central", "s", "vmond",
                            event_id=AlarmEvent.get().id)
    result = {"id": command["id"], "site": "site-a", "action": "dismiss", "ok": True, "error": None,
              "at": AT.isoformat()}
    mirror(("commands/result", result), ("commands/result", {**result, "id": "unknown"}), site="site-b")
    assert CentralCommand.get().state == "pending"  # answered by the wrong site: not done
    mirror(("commands/result", result))
    assert CentralCommand.get().state == "done"
    mirror(new(status="dismissed", updated=AT + timedelta(seconds=9)), site="site-b")
    assert [(e.site.key, e.status) for e in AlarmEvent.select().order_by(AlarmEvent.id)] == [
        ("site-a", "alarmed"), ("site-b", "dismissed")]


def test_a_second_alarm_on_an_event_that_has_one_is_dropped_alone(db: pw.SqliteDatabase) -> None:
    mirror(("config", config()), new(status="alarmed"))
    opened = alarm({"action": "alarm.open", "detail": {}})
    dropped = mirror(("alarms", {"type": "new", "alarm": opened}), ("alarms", {"type": "new", "alarm":
                                                                              {**opened, "id": 6}}), new(id=42))
    assert dropped == 1 and Alarm.select().count() == 1 and AlarmEvent.select().count() == 2


def test_a_resolved_alarm_is_not_reopened_by_an_older_copy_delivered_again(db: pw.SqliteDatabase) -> None:
    mirror(("config", config()), new(status="alarmed"))
    resolved = {**alarm({"action": "alarm.resolve", "detail": {"code": "false_alarm", "text": "a fox"}},
                        state="resolved"), "resolved_at": AT.isoformat()}
    mirror(("alarms", {"type": "update", "alarm": resolved}))
    mirror(("alarms", {"type": "new", "alarm": alarm({"action": "alarm.open", "detail": {}})}))
    assert Alarm.get().state == "resolved"


def test_only_a_sites_own_trail_actions_are_kept_and_their_detail_is_bounded(db: pw.SqliteDatabase) -> None:
    mirror(("config", config()), new(status="alarmed"))
    bulky = {"text": "t" * 1_000_000, "deep": {"a": [1] * 100_000}, **{f"k{n}": n for n in range(100)}}
    mirror(("alarms", {"type": "new", "alarm": alarm({"action": "alarm.note", "detail": bulky})}),
           ("alarms", {"type": "update", "alarm": alarm({"action": "user.delete", "detail": {}})}))
    assert [a.action for a in AuditEntry.select()] == ["alarm.note"]
    kept = AuditEntry.get().detail["mirrored"]["detail"]
    assert "deep" not in kept and len(kept) <= 20 and len(kept["text"]) <= 10_000


def test_sites_announcing_themselves_are_bounded(db: pw.SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sites, "MAX_SITES", 3)
    for n in range(10):
        mirror(("available", "online"), site=f"auto-{n}")
    assert Site.select().count() == 3 and len(list_sites()) == 3
    assert mirror(("available", "online"), site="auto-1") == 0  # one already here still is


def test_an_alarms_trail_stops_growing_at_its_bound(db: pw.SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_module, "MAX_TRAIL", 5)
    mirror(("config", config()), new(status="alarmed"))
    mirror(*(("alarms", {"type": "update", "alarm": alarm({"action": "alarm.note",
                                                           "detail": {"note_id": n, "text": f"note {n}"}})})
             for n in range(20)))
    assert AuditEntry.select().count() == 5 and AlarmNote.select().count() == 5


def test_a_commands_answer_is_not_dated_later_than_it_arrived(db: pw.SqliteDatabase) -> None:
    site = sites.ensure_site("site-a")
    operator = User.create(username="op", password_hash="x", role="guard")
    command = queue_command(site, "note", {"event_id": 41}, {"text": "x"}, (operator.id, "op"), "Central", "s",
                            "vmond")
    mirror(("commands/result", {"id": command["id"], "ok": False, "error": "e" * 100_000,
                                "at": "2999-01-01T00:00:00Z"}))
    answered = CentralCommand.get()
    assert answered.state == "refused" and answered.answered_at == AT and len(answered.error) <= 1000


def test_an_accounts_schedule_is_kept_as_the_central_reads_it_with_nothing_riding_along(
        db: pw.SqliteDatabase) -> None:
    doc = config()
    deep: Any = [1]
    for _ in range(500):
        deep = [deep]
    doc["accounts"][0]["schedule"] = {
        "weekly": [{"days": ["mon"], "from": "08:00", "to": "18:00"}] * 500, "junk": deep,
        "exceptions": [{"first": "2026-12-24", "last": "2026-12-26", "windows": [], "name": {"x": deep}}]}
    assert mirror(("config", doc)) == 0
    schedule = Account.get().schedule
    assert set(schedule) == {"weekly", "exceptions"} and len(schedule["weekly"]) == 100
    assert schedule["exceptions"][0]["name"] == ""


def test_a_second_take_over_like_an_earlier_one_is_on_the_trail_and_a_redelivery_is_not(
        db: pw.SqliteDatabase) -> None:
    mirror(("config", config()), new(status="alarmed"))
    mirror(("alarms", {"type": "new", "alarm": alarm({"action": "alarm.open", "detail": {}})}))

    def took_over(minutes: int) -> tuple[str, dict[str, Any]]:
        acknowledged = {**alarm({"action": "alarm.acknowledge", "detail": {"took_over_from": 2}},
                                state="acknowledged"),
                        "acknowledged_at": (AT + timedelta(minutes=minutes)).isoformat(),
                        "acknowledged_by": {"id": 3, "username": "bob"}}
        return "alarms", {"type": "update", "alarm": acknowledged}

    mirror(took_over(1), took_over(1), took_over(3), took_over(3))
    assert [a.action for a in AuditEntry.select().order_by(AuditEntry.id)] == [
        "alarm.open", "alarm.acknowledge", "alarm.acknowledge"]


def test_a_media_id_listed_twice_in_one_event_is_one_row_and_the_event_is_mirrored(db: pw.SqliteDatabase) -> None:
    assert mirror(new(images=[{"id": 90}, {"id": 90}], video={"state": "ready", "id": 90})) == 0
    assert AlarmEvent.select().count() == 1 and Media.select().count() == 1
