"""The wall's queue: each event's normalised kind and its priority (defaults, events.priorities, an account's own),
migration 8 on a database that already has events, and the queue order over the API, the WebSocket and MQTT."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import EXPECTED, MAIL_DIR, Daemon, distinct, sample
from mailmaker import dvr_mail
from test_store import record
from test_web import browser_session, log_in

from vmond.config import Config, ConfigError
from vmond.daemon import running
from vmond.ingest.mailparse import parse_mail
from vmond.mqtt.discovery import Discovery
from vmond.store import migrations
from vmond.store.db import Database, open_sqlite
from vmond.store.events import IngestRecord, get_event, list_queue, record_mail
from vmond.store.sync import sync_accounts
from vmond.util.kinds import DEFAULT_PRIORITIES, KINDS, event_kind, priority_of

# What each sample camera mail is (tests/data/camera-mail): every sample must have its kind here.
SAMPLE_KINDS = {
    "amcrest-tamper.eml": "tamper",
    "dafang-uuencode.eml": "motion",
    "hikvision-ipc-intrusion.eml": "intrusion",
    "nvr-fn3108xe-motion.eml": "motion",
    "reolink-person.eml": "person",
    "swann-nvr-human.eml": "person",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_sample_mails_get_their_kind(name: str) -> None:
    assert set(SAMPLE_KINDS) == set(EXPECTED) == {p.name for p in MAIL_DIR.glob("*.eml")}
    parsed = parse_mail(sample(name))
    assert event_kind(parsed.event_type, parsed.subject) == SAMPLE_KINDS[name]


@pytest.mark.parametrize(("event_type", "kind"), [
    ("Person", "person"), ("Person Detected", "person"), ("Human", "person"), ("Pedestrian", "person"),
    ("Human and Vehicle", "person"), ("SMD Human", "person"),
    ("Vehicle", "vehicle"), ("Car", "vehicle"), ("Vehicle Detected", "vehicle"),
    ("Face Detection", "face"), ("FaceDetection", "face"),
    ("Line crossing", "line_crossing"), ("Line Crossing Detection", "line_crossing"), ("Tripwire", "line_crossing"),
    ("CrossLineDetection", "line_crossing"), ("越界侦测", "line_crossing"),
    ("Intrusion", "intrusion"), ("Intrusion Detection", "intrusion"), ("Region Entrance", "intrusion"),
    ("Region Entrance Detection", "intrusion"), ("Field detection", "intrusion"), ("区域入侵侦测", "intrusion"),
    ("Tamper", "tamper"), ("Tamper Detect", "tamper"), ("Video blind", "tamper"), ("Scene change", "tamper"),
    ("Video Tampering", "tamper"), ("VideoBlind", "tamper"),
    ("Video loss", "video_loss"), ("VideoLoss", "video_loss"), ("视频丢失", "video_loss"),
    ("Face", "face"),
    ("Motion", "motion"), ("VMD", "motion"), ("Motion Detection", "motion"), ("motion alarm", "motion"),
    ("移动侦测", "motion"),
    ("Disk full", "other"), ("Alarm input 1", "other"), ("", "other"), ("Scarface", "other"), ("Cartography", "other"),
])
def test_what_cameras_write_is_normalised(event_type: str, kind: str) -> None:
    assert event_kind(event_type) == kind


def test_the_subject_names_the_kind_when_the_event_type_does_not() -> None:
    assert event_kind("Alarm", "Person detected at the gate") == "person"
    assert event_kind("Motion", "Person detected at the gate") == "motion"  # the event type comes first
    assert event_kind(None, None) == "other"


def test_priorities_default_and_are_overridden_by_the_account() -> None:
    assert set(DEFAULT_PRIORITIES) == set(KINDS)
    assert [priority_of(k) for k in ("intrusion", "person", "tamper")] == [1, 1, 1]
    assert [priority_of(k) for k in ("line_crossing", "vehicle", "face", "video_loss")] == [2, 2, 2, 2]
    assert [priority_of(k) for k in ("motion", "other")] == [3, 3]
    site = {**DEFAULT_PRIORITIES, "motion": 4}
    assert priority_of("motion", site) == 4
    assert priority_of("motion", site, {"motion": 2}) == 2
    assert priority_of("vehicle", site, {"motion": 2}) == 2  # not the account's: the site's


def test_priority_keys_are_checked(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(events={"priorities": {"persn": 1, "motion": 9, "vehicle": "high"}},
                    accounts=[{"name": "A", "priorities": {"tamper": 0}}])
    problems = "\n".join(str(p) for p in raised.value.problems)
    assert "events.priorities.persn: unknown event kind; did you mean `person`?" in problems
    assert "events.priorities.motion: must be from 1 to 5, not 9" in problems
    assert "events.priorities.vehicle: expected a whole number" in problems
    assert "accounts[0].priorities.tamper: must be from 1 to 5, not 0" in problems
    config = make_config(events={"priorities": {"motion": 4}, "escalate_after": "2m"})
    assert config.events.priorities == {**DEFAULT_PRIORITIES, "motion": 4}
    assert config.events.escalate_after == 120.0
    assert config.accounts[0].priorities == {}


def typed(key: str, event_type: str, local: str = "camera-front", seconds: int = 0) -> IngestRecord:
    return dataclasses.replace(record(key, local, seconds), event_type=event_type, subject=event_type)


async def test_the_store_records_kind_and_priority_with_the_accounts_own(
        tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=[
        {"name": "Car park", "priorities": {"vehicle": 1},
         "cameras": [{"name": "Gate", "smtp_address": "camera-front"}]},
        {"name": "Shop", "cameras": [{"name": "Door", "smtp_address": "camera-back"}]}])
    site = {**DEFAULT_PRIORITIES, "motion": 4}
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)

        async def mail(key: str, event_type: str, local: str, seconds: int, window: float = 0.0) -> dict[str, Any]:
            result = await db.write(record_mail, "monitor.local", typed(key, event_type, local, seconds), window,
                                    None, site)
            return result.event

        car_park = await mail("a", "Vehicle Detected", "camera-front", 0)
        shop = await mail("b", "Vehicle Detected", "camera-back", 1)
        assert (car_park["kind"], car_park["priority"]) == ("vehicle", 1)  # the account's own
        assert (shop["kind"], shop["priority"]) == ("vehicle", 2)  # the default
        motion = await mail("c", "Motion", "camera-back", 10)
        assert (motion["kind"], motion["priority"]) == ("motion", 4)  # events.priorities
        # A person within the coalescing window raises the open motion event; a later motion does not lower it.
        raised = await mail("d", "Person", "camera-back", 12, window=30.0)
        assert raised["id"] == motion["id"] and (raised["kind"], raised["priority"]) == ("person", 1)
        again = await mail("e", "Motion", "camera-back", 14, window=30.0)
        assert again["id"] == motion["id"] and (again["kind"], again["priority"]) == ("person", 1)

        # The queue: priority first, then the time of receipt, oldest first.
        queue = await db.read(list_queue, "monitor.local")
        assert [e["id"] for e in queue] == [car_park["id"], motion["id"], shop["id"]]

        # A sync from a file that drops the account's priorities: new events follow the site again.
        plain = make_config(accounts=[
            {"name": "Car park", "cameras": [{"name": "Gate", "smtp_address": "camera-front"}]}])
        await db.write(sync_accounts, plain.accounts)
        later = await mail("f", "Vehicle", "camera-front", 40)
        assert later["priority"] == 2
        assert (await db.read(get_event, "monitor.local", car_park["id"]))["priority"] == 1  # fixed when recorded


def test_migration_8_gives_existing_events_their_kind_and_priority(tmp_path: Path) -> None:
    path = tmp_path / "vmond.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in migrations.MIGRATIONS[:7]:
        step(conn)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("""INSERT INTO account (id, name, address, notes, armed, from_config, created_at, updated_at)
                    VALUES (1, 'A', '', '', 1, 0, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')""")
    rows = [("Person Detected", "Person Detected by Cam"), ("Human", "Alert from NVR"), ("Alarm", "Line crossing"),
            ("Tamper Detect", "IPC Message"), ("motion alarm", "NVR alarm"), ("Disk error", "NVR"),
            ("Vehicle", "x")]
    for n, (event_type, subject) in enumerate(rows, 1):
        conn.execute(
            """INSERT INTO alarm_event (id, received_at, updated_at, event_time, event_type, subject, body_excerpt,
                   status, is_test, flags, mail_count, video_state)
               VALUES (?, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z',
                       '2026-01-01T00:00:00.000000Z', ?, ?, '', 'active', 0, '[]', 1, 'none')""",
            (n, event_type, subject))
    conn.close()

    db = open_sqlite(path)  # migrates to the latest schema, with a backup of version 7
    try:
        got = db.connection().execute("SELECT event_type, kind, priority FROM alarm_event ORDER BY id").fetchall()
        assert got == [("Person Detected", "person", 1), ("Human", "person", 1), ("Alarm", "line_crossing", 2),
                       ("Tamper Detect", "tamper", 1), ("motion alarm", "motion", 3), ("Disk error", "other", 3),
                       ("Vehicle", "vehicle", 2)]
        assert db.connection().execute("SELECT priorities FROM account").fetchall() == [(None,)]
    finally:
        db.close()
    assert (tmp_path / "vmond.db.v7.bak").is_file()


async def test_api_and_websocket_carry_kind_and_priority_in_queue_order(daemon: Daemon, guard: str) -> None:
    headers = {"Authorization": f"Bearer {guard}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(f"{daemon.url}/ws") as ws:
        for n, name in enumerate(("nvr-fn3108xe-motion.eml", "reolink-person.eml", "amcrest-tamper.eml")):
            assert (await daemon.send(distinct(sample(name), n)))["data"][0] == 250
            await daemon.wait_idle()
        created = [(await ws.receive_json(timeout=5))["data"] for _ in range(3)]
    assert [(e["kind"], e["priority"]) for e in created] == [("motion", 3), ("person", 1), ("tamper", 1)]
    motion, person, tamper = (e["id"] for e in created)

    status, body = await daemon.api("GET", "/api/events?order=queue", guard)
    assert status == 200
    assert [e["id"] for e in body["events"]] == [person, tamper, motion]  # priority, then oldest first
    status, body = await daemon.api("GET", "/api/events", guard)
    assert [e["id"] for e in body["events"]] == [tamper, person, motion]  # the default stays newest first
    assert (await daemon.api("GET", f"/api/events/{person}", guard))[1]["kind"] == "person"
    assert (await daemon.api("GET", "/api/events?order=queue&status=all", guard))[0] == 400
    assert (await daemon.api("GET", "/api/events?order=oldest", guard))[0] == 400


async def test_the_wall_is_rendered_in_queue_order(make_config: Callable[..., Config]) -> None:
    config = make_config(events={"coalesce_window": "0s", "escalate_after": "5m"})
    async with running(config) as services:
        daemon = Daemon(services)
        # A camera's test mail (here a person, priority 1) stays off the queue.
        test_mail = b"X-Vmond-Test: send-test\r\n" + sample("reolink-person.eml")
        for n, mail in enumerate((dvr_mail("CAM 1", "A1", 1), sample("swann-nvr-human.eml"), test_mail,
                                  sample("hikvision-ipc-intrusion.eml"))):
            assert (await daemon.send(distinct(mail, n)))["data"][0] == 250
            await daemon.wait_idle()
        await daemon.add_user("guard1", "guard")
        token = await daemon.token("guard1")
        status, events = await daemon.api("GET", "/api/events?order=queue", token)
        status, tests = await daemon.api("GET", "/api/events?include_tests=1", token)
        (test_event,) = [e for e in tests["events"] if e["is_test"]]
        async with browser_session() as http:
            await log_in(daemon, http, "guard1")
            async with http.get(f"{daemon.url}/") as response:
                page = await response.text()
    ids = [e["id"] for e in events["events"]]
    assert [e["kind"] for e in events["events"]] == ["person", "intrusion", "motion"]
    positions = [page.index(f'data-event-id="{i}"') for i in ids]
    assert positions == sorted(positions)
    assert 'data-priority="1" data-kind="person"' in page and 'data-priority="3" data-kind="motion"' in page
    assert f'data-event-id="{test_event["id"]}"' not in page and test_event["kind"] == "person"
    assert 'data-escalate-after="300.0"' in page
    assert "data-escalated" not in page  # five minutes have not passed


def test_home_assistant_gets_the_events_kind() -> None:
    def sent(event_type: str, kind: str) -> str:
        return json.loads(Discovery.camera_event("m", {"id": 1, "event_type": event_type, "kind": kind}))["event_type"]

    # Home Assistant's own rules would call this a line crossing; the event's kind says intrusion.
    assert sent("CrossRegionDetection", "intrusion") == "intrusion"
    assert sent("Audio exception", "other") == "audio"
    assert sent("Alarm input 1", "other") == "alarm"


def test_the_schema_has_kind_and_priority() -> None:
    schema = json.loads((Path(__file__).parent.parent / "schema" / "mqtt-messages.json").read_text())
    event = schema["$defs"]["event"]
    assert {"kind", "priority"} <= set(event["required"])
    assert event["properties"]["kind"]["enum"] == list(KINDS)
