"""The supervision watcher: the appliance's own conditions raised through the seam when a probe says so (after
``supervision.mqtt_down_after`` for the broker) and closed when it ends, each once; a camera's silence seen within
a fraction of a second of its deadline. Probes are plain values the test sets; waits poll with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from mosquitto import Mosquitto

from vmond.config import Config
from vmond.daemon import running
from vmond.store import outbox
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.store.events import list_events
from vmond.store.messages import Topics
from vmond.store.supervision import open_conditions
from vmond.store.sync import sync_accounts
from vmond.supervision import watcher
from vmond.supervision.watcher import Probes, Supervisor
from vmond.util.bus import Bus

DOMAIN = "monitor.local"


@dataclass
class Appliance:
    free: int = 10**12
    connected: bool = True
    clip_failures: int = 0
    spool_age: float | None = None
    link_looks: int = 0  # how often the watcher asked about the broker

    def link(self) -> bool:
        self.link_looks += 1
        return self.connected

    def probes(self) -> Probes:
        return Probes(free_space=lambda: self.free, mqtt_connected=self.link,
                      clip_failures_in_a_row=lambda: self.clip_failures, spool_oldest_age=lambda: self.spool_age)


async def events(db: Database) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in reversed(await db.read(list_events, DOMAIN, "all", 100)):
        by_kind.setdefault(event["kind"], []).append(event)
    return by_kind


async def poll(db: Database, condition: Callable[[dict[str, list[dict[str, Any]]]], bool], what: str) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}

    async def look() -> None:
        nonlocal seen
        seen = await events(db)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        await look()
        if condition(seen):
            return
        assert loop.time() < deadline, f"not within 5 s: {what}; events: {seen}"
        await asyncio.sleep(0.02)


async def test_appliance_conditions_are_raised_and_close_themselves(
        tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": "1GB"},
                         mqtt={"enabled": True}, supervision={"mqtt_down_after": "2s"})
    appliance = Appliance()
    bus = Bus(first_seq=0)
    io = ThreadPoolExecutor(2)
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        changes = Changes(db, bus, Topics("vmond", "test-site"))
        wakes: list[int] = []
        changes.on_queued(lambda: wakes.append(1))
        async with Supervisor(config, db, changes, appliance.probes(), io, interval=0.05, clips_failing_after=3,
                              spool_stuck_after=60):
            appliance.free = 10**8
            appliance.clip_failures = 3
            appliance.spool_age = 61.0
            await poll(db, lambda seen: {"disk_low", "clips_failing", "spool_stuck"} <= set(seen),
                       "disk, clips and spool raised")
            seen = await events(db)
            disk = seen["disk_low"][0]
            assert (disk["camera"], disk["account"], disk["priority"], disk["status"]) == (None, None, 1, "active")
            assert disk["event_type"] == "Disk space low" and "below storage.min_free_space (1GB)" in disk["subject"]
            assert wakes, "the MQTT forwarder is woken for the queued event messages"
            assert [m.type for m in bus.since(0) or []].count("event.created") == 3

            appliance.connected = False  # the broker: only after mqtt_down_after
            looks = appliance.link_looks
            await wait_until(lambda: appliance.link_looks >= looks + 3, what="three looks at the broker link")
            assert "mqtt_down" not in await events(db)  # seen down, but not yet for 2 s
            await poll(db, lambda seen: "mqtt_down" in seen, "mqtt_down after 2 s")

            appliance.free = 10**10
            appliance.clip_failures = 0
            appliance.spool_age = 0.5
            appliance.connected = True
            await poll(db, lambda seen: all(e[0]["status"] == "dismissed" for e in seen.values()), "all closed")
            seen = await events(db)
            assert {kind: len(items) for kind, items in seen.items()} == {
                "disk_low": 1, "clips_failing": 1, "spool_stuck": 1, "mqtt_down": 1}  # each raised once
            assert all("cleared" in items[0]["flags"] for items in seen.values())
            assert await db.read(open_conditions) == {}
            dismissed = [m.data for m in bus.since(0) or [] if m.type == "event.dismissed"]
            assert len(dismissed) == 4 and all(d["by"] is None for d in dismissed)
    io.shutdown()


async def test_a_condition_open_at_start_closes_when_its_probe_is_gone(
        tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(mqtt={"enabled": True}, supervision={"mqtt_down_after": "1s"})
    appliance = Appliance(connected=False)
    io = ThreadPoolExecutor(2)
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        changes = Changes(db, Bus(), None)
        async with Supervisor(config, db, changes, appliance.probes(), io, interval=0.05):
            await poll(db, lambda seen: "mqtt_down" in seen, "mqtt_down raised")
        # Restarted with MQTT turned off: nothing watches the broker, so its condition ends.
        async with Supervisor(config, db, changes, Probes(), io, interval=0.05):
            await poll(db, lambda seen: seen["mqtt_down"][0]["status"] == "dismissed", "mqtt_down closed")
    io.shutdown()


async def test_a_silence_is_seen_at_its_deadline(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(supervision={"max_silence": "1s"})
    io = ThreadPoolExecutor(2)
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        loop = asyncio.get_running_loop()
        async with Supervisor(config, db, Changes(db, Bus(), None), Probes(), io):  # 10 s between probe rounds
            started = loop.time()
            await poll(db, lambda seen: len(seen.get("camera_silent", [])) == 2, "both cameras silent")
            assert loop.time() - started < 2.5  # at the deadline, not at the next 10 s round
    io.shutdown()


async def test_a_running_daemon_reports_its_broker_down_and_back(
        tmp_path: Path, make_config: Callable[..., Config], quick_mqtt: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's own wiring: the forwarder's link state is the probe. The broker is down at start: after
    supervision.mqtt_down_after an mqtt_down event is on the wall; once the broker is up it closes, and both
    messages reach the broker from the outbox."""
    monkeypatch.setattr(watcher, "PROBE_INTERVAL", 0.1)
    broker = Mosquitto(tmp_path / "broker")  # not started yet
    config = make_config(mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port},
                         supervision={"mqtt_down_after": "1s"}, video={"enabled": False})
    try:
        async with running(config) as services:
            db = services.db
            await poll(db, lambda seen: "mqtt_down" in seen, "mqtt_down raised")
            [down] = (await events(db))["mqtt_down"]
            assert down["status"] == "active" and f"127.0.0.1:{broker.port}" in down["subject"]
            await broker.astart()
            await poll(db, lambda seen: seen["mqtt_down"][0]["status"] == "dismissed", "mqtt_down closed")
            await wait_until(lambda: services.mqtt is not None and services.mqtt.connected, 10, "connected")

            async def depth() -> int:
                return int((await db.read(outbox.stats))["depth"])

            for _ in range(500):  # the raise and the close, delivered
                if await depth() == 0:
                    break
                await asyncio.sleep(0.02)
            assert await depth() == 0
    finally:
        await broker.astop()
