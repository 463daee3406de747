"""Notification rows are written by the seam, in the transaction of the change that causes them: an alarm raised, a
supervision event, an event left unhandled; to the duty targets and the account's keyholders; never for a test
mail or an event flagged unmonitored or snoozed; whether or not MQTT is on; nothing on a rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vmond.config import Config
from vmond.store import notifications
from vmond.store.alarms import raise_alarm
from vmond.store.alarmtrail import sentence
from vmond.store.changes import Change, Changes
from vmond.store.db import Database
from vmond.store.events import IngestRecord, get_event, record_mail, report, set_status
from vmond.store.models import AlarmEvent, AuditEntry, Notification
from vmond.store.notifications import NotifyRules
from vmond.store.sync import sync_accounts
from vmond.store.users import create_user
from vmond.util.bus import Bus

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
KEYHOLDER_URL = "json://keyholder:s3cret@127.0.0.1:9/hook"
RULES = NotifyRules(on=frozenset({"alarm_raised", "unhandled", "supervision"}), targets=("duty", "mail"),
                    escalate_after=120.0, site="Test Site", public_url="https://monitor.example.com",
                    zone="Europe/Berlin")


@dataclass
class Seam:
    db: Database
    changes: Changes
    wakes: list[str] = field(default_factory=list)

    async def rows(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [{"target": r.target, "rule": r.rule, "url": r.url, "event_id": r.event_id,
                     "alarm_id": r.alarm_id, "title": r.title, "body": r.body, "uid": r.uid}
                    for r in Notification.select().order_by(Notification.id)]
        return await self.db.read(read)


@pytest.fixture
async def seam(tmp_path: Path, make_config: Callable[..., Config]) -> AsyncIterator[Seam]:
    config = make_config(accounts=[{
        "name": "Test Customer",
        "contacts": [{"name": "Jane Keyholder", "phone": "+15550100", "notify_url": KEYHOLDER_URL},
                     {"name": "Bob Nobody", "phone": "+15550101"}],
        "cameras": [{"name": "Front Door", "smtp_address": "camera-front"}]}])
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        changes = Changes(db, Bus(), None, RULES)  # MQTT off: notifications do not depend on it
        result = Seam(db, changes)
        changes.on_notified(lambda: result.wakes.append("notifier"))
        yield result


def _mail(key: str, is_test: bool = False, received_at: datetime = NOW) -> IngestRecord:
    return IngestRecord(ingest_key=key, local_part="camera-front", received_at=received_at, event_time=received_at,
                        event_type="Person", subject="Person detected", is_test=is_test)


async def _alarm_from(seam: Seam, key: str, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    guard = await seam.db.write(create_user, f"guard-{key}", "x", "guard")
    mail = await seam.changes.record(record_mail, "monitor.local", _mail(key, **kwargs), 0.0)
    alarm, event, _ = await seam.changes.record(raise_alarm, "monitor.local", mail.event["id"], guard["id"])
    return alarm, event


async def test_a_raised_alarm_notifies_the_targets_and_the_keyholder_in_its_transaction(seam: Seam) -> None:
    mail = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 0.0)
    assert await seam.rows() == [] and seam.wakes == []  # a camera's event waits for a guard (or for "unhandled")

    alarm, event = await _alarm_from(seam, "b")
    rows = await seam.rows()
    assert [(r["target"], r["rule"]) for r in rows] == [
        ("duty", "alarm_raised"), ("mail", "alarm_raised"), ("contact Jane Keyholder", "alarm_raised")]
    assert {r["alarm_id"] for r in rows} == {alarm["id"]} and {r["event_id"] for r in rows} == {event["id"]}
    # The targets' URLs stay in the configuration; the keyholder's is kept as it was (contacts are rewritten).
    assert [r["url"] for r in rows] == [None, None, KEYHOLDER_URL]
    first = rows[0]
    assert first["title"] == "Test Site: Alarm: person at Front Door (Test Customer)"
    assert "Camera: Front Door" in first["body"] and "Account: Test Customer" in first["body"]
    assert "Received: 2026-01-02 04:04:05 CET" in first["body"]  # as the clocks on site (site.timezone) show it
    assert f"Link: https://monitor.example.com/alarms/{alarm['id']}" in first["body"]
    assert first["body"].endswith(f"Ref: {first['uid']}")
    assert len({r["uid"] for r in rows}) == 3
    assert seam.wakes == ["notifier"]
    assert mail.event["id"] != event["id"]


def _flag(event_id: int, flag: str) -> None:
    event = AlarmEvent.get_by_id(event_id)
    event.flags = [*event.flags, flag]
    event.save()


async def test_test_mails_and_unmonitored_or_snoozed_events_notify_nobody(seam: Seam) -> None:
    for flag in ("unmonitored", "snoozed"):
        mail = await seam.changes.record(record_mail, "monitor.local", _mail(f"quiet-{flag}"), 0.0)
        await seam.db.write(_flag, mail.event["id"], flag)
        guard = await seam.db.write(create_user, f"g-{flag}", "x", "guard")
        await seam.changes.record(raise_alarm, "monitor.local", mail.event["id"], guard["id"])
    await seam.changes.record(record_mail, "monitor.local", _mail("t", is_test=True), 0.0)
    assert await seam.rows() == [] and seam.wakes == []


def _supervision_event(kind: str, change: Change | None = None) -> dict[str, Any]:
    """What the supervision watcher records: an ordinary event of a supervision kind, here without a camera."""
    event = AlarmEvent.create(received_at=NOW, updated_at=NOW, event_time=NOW, event_type="Disk low",
                              subject="", kind=kind, priority=1)
    event_dict = get_event("monitor.local", event.id)
    report(change or Change(), "new", event_dict)
    return event_dict


async def test_a_supervision_event_notifies_the_targets(seam: Seam) -> None:
    event = await seam.changes.record(_supervision_event, "disk_low")
    rows = await seam.rows()
    assert [(r["target"], r["rule"], r["event_id"]) for r in rows] == [
        ("duty", "supervision", event["id"]), ("mail", "supervision", event["id"])]  # no camera: no keyholder
    assert rows[0]["title"] == "Test Site: Supervision: disk low at the appliance"
    assert f"Link: https://monitor.example.com/events/{event['id']}" in rows[0]["body"]
    assert seam.wakes == ["notifier"]


def _fails_after_raising(event_id: int, user_id: int, change: Change) -> None:
    raise_alarm("monitor.local", event_id, user_id, change)
    raise RuntimeError("the change failed after queuing")


async def test_a_change_that_rolls_back_leaves_no_notification(seam: Seam) -> None:
    guard = await seam.db.write(create_user, "guard", "x", "guard")
    mail = await seam.changes.record(record_mail, "monitor.local", _mail("a"), 0.0)
    with pytest.raises(RuntimeError, match="after queuing"):
        await seam.changes.record(_fails_after_raising, mail.event["id"], guard["id"])
    assert await seam.rows() == [] and seam.wakes == []


async def test_rules_left_out_of_notify_on_write_nothing(tmp_path: Path, config: Config) -> None:
    async with Database(tmp_path / "other.db") as db:
        await db.write(sync_accounts, config.accounts)
        only_supervision = NotifyRules(on=frozenset({"supervision"}), targets=("duty",), escalate_after=1.0,
                                       site="S")
        seam = Seam(db, Changes(db, Bus(), None, only_supervision))
        await _alarm_from(seam, "a")
        assert await seam.rows() == []
        await seam.changes.record(_supervision_event, "mqtt_down")
        assert [r["rule"] for r in await seam.rows()] == ["supervision"]


async def test_an_event_left_untouched_is_notified_once_as_unhandled(
        seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW]
    monkeypatch.setattr(notifications, "utcnow", lambda: clock[0])
    untouched = await seam.changes.record(record_mail, "monitor.local", _mail("u"), 0.0)
    dismissed = await seam.changes.record(record_mail, "monitor.local", _mail("d"), 0.0)
    test_mail = await seam.changes.record(record_mail, "monitor.local", _mail("t", is_test=True), 0.0)
    supervision = await seam.changes.record(_supervision_event, "disk_low")  # told at once, not again
    guard = await seam.db.write(create_user, "guard", "x", "guard")
    await seam.changes.record(set_status, "monitor.local", dismissed.event["id"], "dismissed", guard["id"])

    async def check(after: int | None) -> tuple[int, int]:
        due, reached = await seam.db.read(notifications.unhandled_due, RULES, after)
        return (await seam.changes.record(notifications.escalate_unhandled, RULES, due) if due else 0), reached

    clock[0] = NOW + timedelta(seconds=119)  # not yet
    queued, reached = await check(None)
    assert queued == 0 and reached == untouched.event["id"] - 1
    assert {r["rule"] for r in await seam.rows()} == {"supervision"}

    clock[0] = NOW + timedelta(seconds=121)
    queued, reached = await check(reached)
    rows = await seam.rows()
    unhandled = [r for r in rows if r["rule"] == "unhandled"]
    assert queued == 2 and {r["event_id"] for r in unhandled} == {untouched.event["id"]}
    # The duty targets, not the keyholder: an event the guards have yet to look at is theirs to handle.
    assert [r["target"] for r in unhandled] == ["duty", "mail"]
    assert unhandled[0]["title"].startswith("Test Site: Unhandled event:")
    assert {r["event_id"] for r in rows if r["rule"] == "supervision"} == {supervision["id"]}
    assert seam.wakes == ["notifier", "notifier"]  # the supervision event's rows, then the unhandled ones
    assert test_mail.event["id"] not in {r["event_id"] for r in rows}

    # Again, from the start (as after a restart), and from where it got to: once per event.
    clock[0] = NOW + timedelta(seconds=200)
    assert (await check(None))[0] == 0 and (await check(reached))[0] == 0 and len(await seam.rows()) == 4
    # An event the pipeline committed late (received before the others were looked at) is still looked at.
    late = await seam.changes.record(record_mail, "monitor.local", _mail("late", received_at=NOW), 0.0)
    queued, _ = await check(reached)
    assert queued == 2 and late.event["id"] in {r["event_id"] for r in await seam.rows()}


async def test_a_flood_of_events_nobody_is_told_about_does_not_hold_up_the_next(
        seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW]
    monkeypatch.setattr(notifications, "utcnow", lambda: clock[0])
    monkeypatch.setattr(notifications, "UNHANDLED_BATCH", 2)
    for n in range(5):  # a camera flooding a disarmed account
        mail = await seam.changes.record(record_mail, "monitor.local", _mail(f"quiet-{n}"), 0.0)
        await seam.db.write(_flag, mail.event["id"], "unmonitored")
    wanted = await seam.changes.record(record_mail, "monitor.local", _mail("wanted"), 0.0)
    clock[0] = NOW + timedelta(seconds=121)
    after: int | None = None
    for _ in range(4):
        due, after = await seam.db.read(notifications.unhandled_due, RULES, after)
        if due:
            await seam.changes.record(notifications.escalate_unhandled, RULES, due)
    assert {r["event_id"] for r in await seam.rows()} == {wanted.event["id"]}


async def test_a_site_alarming_at_once_is_told_in_one_message_beyond_the_first_few(
        seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW]
    monkeypatch.setattr(notifications, "utcnow", lambda: clock[0])
    events = [(await seam.changes.record(record_mail, "monitor.local", _mail(f"storm-{n}"), 0.0)).event["id"]
              for n in range(8)]
    clock[0] = NOW + timedelta(seconds=121)
    due, after = await seam.db.read(notifications.unhandled_due, RULES, None)
    assert await seam.changes.record(notifications.escalate_unhandled, RULES, due) == 5 * 2 + 2
    sendable = [r for r in await seam.rows() if r["title"]]  # the grouped events' own rows are never sent
    one_by_one = [r for r in sendable if "more unhandled" not in r["title"]]
    assert sorted({r["event_id"] for r in one_by_one}) == events[:5] and len(one_by_one) == 10
    [duty, mail] = [r for r in sendable if r["title"] == "Test Site: 3 more unhandled events"]
    assert (duty["target"], mail["target"]) == ("duty", "mail")
    assert duty["body"].count("\n- person at Front Door (Test Customer), received 2026-01-02 04:04:05 CET") == 3
    # Every one of the eight counts as told: the next look queues nothing.
    clock[0] = NOW + timedelta(seconds=200)
    due, _ = await seam.db.read(notifications.unhandled_due, RULES, None)
    assert due == [] or await seam.changes.record(notifications.escalate_unhandled, RULES, due) == 0


async def test_outcomes_go_on_the_audit_trail_in_words(seam: Seam) -> None:
    await _alarm_from(seam, "a")
    duty, mail, keyholder = await seam.rows()
    ids = await seam.db.read(lambda: {r.uid: r.id for r in Notification.select()})
    await seam.changes.record(notifications.sent, ids[duty["uid"]])
    await seam.changes.record(notifications.failed, ids[mail["uid"]], "Connection refused", 10.0)
    await seam.changes.record(notifications.failed, ids[mail["uid"]], "Connection refused", 30.0)
    await seam.changes.record(notifications.failed, ids[keyholder["uid"]], "HTTP 500", None)

    def trail() -> list[str]:
        return [sentence(a.action, a.detail, None, {}, {}) for a in
                AuditEntry.select().where(AuditEntry.action.startswith("notification.")).order_by(AuditEntry.id)]
    assert await seam.db.read(trail) == [
        "vmond notified duty of the alarm",
        "vmond could not notify mail of the alarm yet, trying again: Connection refused",  # once, not per retry
        "vmond gave up notifying contact Jane Keyholder of the alarm: HTTP 500"]
    assert await seam.db.read(notifications.stats) == {"pending": 1, "sent": 1, "failed": 1}
    # A row marked sent is never due again.
    assert [r["target"] for r in await seam.db.read(notifications.due, 10, [])] == []


async def test_the_due_rows_are_one_per_target_and_leave_busy_targets_out(seam: Seam) -> None:
    await _alarm_from(seam, "a")
    await _alarm_from(seam, "b")
    rows = await seam.rows()
    assert len(rows) == 6
    first = [r["uid"] for r in rows[:3]]  # alarm a's: duty, mail, the keyholder
    # The oldest row of each target, never two for one target (a slow target must not take two send slots).
    assert [r["uid"] for r in await seam.db.read(notifications.due, 10, [])] == first
    assert [r["uid"] for r in await seam.db.read(notifications.due, 2, [])] == first[:2]
    # A target whose send runs still (or hangs) has nothing due, and nothing coming up, until it ends.
    busy = ["duty", "contact Jane Keyholder"]
    assert [r["target"] for r in await seam.db.read(notifications.due, 10, [], busy)] == ["mail"]
    assert await seam.db.read(notifications.next_due, [], [*busy, "mail"]) is None
    assert await seam.db.read(notifications.next_due, [], busy) is not None
