"""The disk keeper: retention, the media quota and the free-space floor remove the oldest closed events' media,
never an open alarm's, an active event's, or one the central station has not got yet."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Daemon, distinct, sample

from vmond.config import Config
from vmond.daemon import running
from vmond.media import retention as retention_module
from vmond.store import outbox
from vmond.store.db import open_sqlite
from vmond.store.models import AlarmEvent, AuditEntry, Media, utcnow

MAILS = {"dismissed": "hikvision-ipc-intrusion.eml", "resolved": "amcrest-tamper.eml",
         "open_alarm": "swann-nvr-human.eml", "active": "nvr-fn3108xe-motion.eml",
         "unforwarded": "hikvision-ipc-intrusion.eml"}


async def scene(daemon: Daemon) -> dict[str, int]:
    """One event in each situation, all received 40 days ago, oldest first in the order of MAILS."""
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    ids: dict[str, int] = {}
    for n, (name, mail) in enumerate(MAILS.items()):
        assert (await daemon.send(distinct(sample(mail), n)))["data"][0] == 250
        await daemon.wait_idle()
        ids[name] = n + 1
    await daemon.api("POST", f"/api/events/{ids['dismissed']}/dismiss", token)
    await daemon.api("POST", f"/api/events/{ids['unforwarded']}/dismiss", token)
    _, alarm = await daemon.api("POST", f"/api/events/{ids['resolved']}/alarm", token)
    await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", token, json={"code": "false_alarm"})
    await daemon.api("POST", f"/api/events/{ids['open_alarm']}/alarm", token)

    def age_them() -> None:
        for position, event_id in enumerate(ids.values()):
            AlarmEvent.update(received_at=utcnow() - timedelta(days=40, minutes=10 - position)).where(
                AlarmEvent.id == event_id).execute()
        outbox.enqueue("vmond/test-site/events", b"{}", event_id=ids["unforwarded"])

    await daemon.services.db.write(age_them)
    return ids


async def media_of(daemon: Daemon) -> dict[int, int]:
    def count() -> dict[int, int]:
        result: dict[int, int] = {}
        for media in Media.select():
            result[media.event_id] = result.get(media.event_id, 0) + 1
        return result

    return await daemon.services.db.read(count)


async def events_left(daemon: Daemon) -> set[int]:
    return await daemon.services.db.read(lambda: {e.id for e in AlarmEvent.select()})


def files(daemon: Daemon) -> set[str]:
    root = daemon.services.media.root
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_retention_removes_only_what_may_go(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "30d"})
    async with running(config) as services:
        daemon = Daemon(services)
        ids = await scene(daemon)
        before = files(daemon)
        await services.disk.round()
        left = await media_of(daemon)
        assert ids["dismissed"] not in await events_left(daemon)  # a dismissed event past retention goes whole
        assert ids["resolved"] in await events_left(daemon) and ids["resolved"] not in left  # its record stays
        for keep in ("open_alarm", "active", "unforwarded"):
            assert left.get(ids[keep]), keep
        gone = before - files(daemon)
        assert gone and all(not name.endswith(".tmp") for name in gone)
        status, event = await daemon.api("GET", f"/api/events/{ids['resolved']}", await daemon.token("guard1"))
        assert "media_expired" in event["flags"] and event["images"] == []


async def test_the_quota_takes_the_oldest_closed_first(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "365d",
                                  "max_media_size": "500KB"})
    async with running(config) as services:
        daemon = Daemon(services)
        ids = await scene(daemon)
        await services.disk.round()
        left = await media_of(daemon)
        assert ids["dismissed"] not in left and ids["resolved"] not in left  # the two closed and forwarded ones
        for keep in ("open_alarm", "active", "unforwarded"):
            assert left.get(ids[keep]), keep  # over quota or not, these stay
        assert ids["dismissed"] in await events_left(daemon)  # the quota takes media, not history


async def test_low_disk_frees_space_and_refuses_mail_until_then(make_config: Callable[..., Config],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": "1GB", "retention": "365d"})
    state: dict[str, Any] = {"free": 10**12}

    async def fake_free(self: Any) -> int:
        return state["free"]

    monkeypatch.setattr(retention_module.DiskKeeper, "_free", fake_free)
    async with running(config) as services:
        daemon = Daemon(services)
        ids = await scene(daemon)
        state["free"] = 10**8  # below the floor until the keeper has removed something
        original = services.disk._drop

        async def dropping(event_ids: list[int], delete_events: bool = False) -> int:
            state["free"] = 10**12
            return await original(event_ids, delete_events)

        monkeypatch.setattr(services.disk, "_drop", dropping)
        await services.disk.round()
        left = await media_of(daemon)
        assert ids["dismissed"] not in left and not services.disk.low
        assert left.get(ids["open_alarm"])


async def audit_rows(daemon: Daemon) -> list[tuple[str, int | None, str]]:
    return await daemon.services.db.read(
        lambda: [(a.target_type, a.target_id, a.action) for a in AuditEntry.select().order_by(AuditEntry.id)])


async def test_a_removed_events_audit_goes_with_it_and_an_alarms_stays(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "30d"})
    async with running(config) as services:
        daemon = Daemon(services)
        ids = await scene(daemon)
        before = await audit_rows(daemon)
        assert ("event", ids["dismissed"], "event.dismissed") in before
        await services.disk.round()
        after = await audit_rows(daemon)
        assert not [row for row in after if row[:2] == ("event", ids["dismissed"])]  # gone with its event
        assert ("event", ids["unforwarded"], "event.dismissed") in after  # its event stays, so does its audit
        alarm_trail = [row for row in before if row[0] == "alarm" or row[:2] == ("event", ids["resolved"])]
        assert alarm_trail and all(row in after for row in alarm_trail)  # the alarm keeps its record and trail
        assert len(after) == len(before) - 1


async def test_the_audit_is_bounded_by_audit_retention(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "30d",
                                  "audit_retention": "90d"})
    db = open_sqlite(config.storage.data_dir / "vmond.db")  # as an older version left it
    old = utcnow() - timedelta(days=91)
    AuditEntry.insert_many([{"at": old, "action": "session.api", "target_type": "user", "target_id": 1,
                             "detail": {}} for _ in range(2500)]).execute()  # more than one batch
    AuditEntry.create(action="session.api", target_type="user", target_id=1, at=utcnow() - timedelta(days=89))
    AuditEntry.create(action="event.dismissed", target_type="event", target_id=4242)  # its event removed
    db.close()
    async with running(config) as services:
        await services.disk.round()
        assert await audit_rows(Daemon(services)) == [("user", 1, "session.api")]


async def test_the_retention_line_says_when(make_config: Callable[..., Config],
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vmond.media.retention")
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "8m"})
    async with running(config) as services:
        await scene(Daemon(services))
        caplog.clear()
        await services.disk.round()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]
    assert len(lines) == 1, lines
    found = re.search(r"received before (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \(storage.retention 8m\)", lines[0])
    assert found, lines[0]
    cutoff = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert timedelta(minutes=7) < utcnow() - cutoff < timedelta(minutes=9)
