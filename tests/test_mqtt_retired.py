"""A camera that is retired or deleted leaves the broker: its retained snapshot is cleared with its Home Assistant
configs, also when it was retired while vmond was down. Checked as a station sees it: a client that subscribes
afterwards gets no retained snapshot for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, Daemon, distinct, sample, write_config
from helpers import wait_until
from mosquitto import Mosquitto, Subscriber
from test_mqtt import BASE, MAIL, mqtt_daemon, mqtt_settings

from vmond.config import Config
from vmond.daemon import running
from vmond.mqtt import discovery
from vmond.reload import reload_accounts
from vmond.store.cameras import active_camera_devices
from vmond.store.models import AlarmEvent

HA = "homeassistant/#"


def snapshot_topic(camera_id: int) -> str:
    return f"{BASE}/cameras/{camera_id}/snapshot"


def discovery_topics(camera_id: int) -> list[str]:
    return [f"homeassistant/{kind}/vmond_test-site/camera_{camera_id}/config" for kind in ("event", "image")]


def with_cameras(*names: str) -> list[dict[str, object]]:
    """The test account with only the named cameras of the base configuration."""
    account = dict(BASE_CONFIG["accounts"][0])
    account["cameras"] = [c for c in account["cameras"] if c["name"] in names]
    return [account]


@pytest.fixture
def retained(broker: Mosquitto) -> Iterator[Callable[[], Awaitable[dict[str, bytes]]]]:
    """What the broker holds retained under the site and Home Assistant, as a client that joins now sees it.

    mosquitto sends the retained messages on the subscription, before it handles the subscriber's next publish:
    the subscriber's own marker coming back (``ready``) is the sign that all of them are in."""
    made: list[Subscriber] = []

    async def look() -> dict[str, bytes]:
        made.append(Subscriber(broker.port, [f"{BASE}/#", HA]))
        await made[-1].ready()
        return {m.topic: m.payload for m in made[-1].messages if m.retain}

    yield look
    for subscriber in made:
        subscriber.close()


async def test_retired_and_deleted_cameras_leave_no_retained_snapshot(
        make_config: Callable[..., Config], tmp_path: Path, broker: Mosquitto,
        retained: Callable[[], Awaitable[dict[str, bytes]]]) -> None:
    async with mqtt_daemon(make_config, broker.port, homeassistant_discovery=True) as daemon:
        await daemon.add_user()
        token = await daemon.token()
        status, gate = await daemon.api("POST", "/api/cameras", token, json={"account_id": 1, "name": "Side Gate"})
        assert status == 201
        for n, to in enumerate(("camera-front", "camera-back", gate["smtp_address"].split("@")[0])):
            assert (await daemon.send(distinct(sample(MAIL), n), to=f"{to}@monitor.local"))["data"][0] == 250
        await daemon.wait_idle()
        cameras = [1, 2, gate["id"]]
        mqtt = daemon.services.mqtt
        # The broker acknowledged the snapshots (published after the cameras' discovery configs).
        await wait_until(lambda: set(cameras) <= set(mqtt._state.snapshots) and set(cameras) <= mqtt._state.announced,
                         timeout=10)
        held = await retained()
        assert all(held[snapshot_topic(c)][:3] == b"\xff\xd8\xff" for c in cameras)
        assert all(held.get(topic) for c in cameras for topic in discovery_topics(c))

        # Back Yard leaves the configuration (SIGHUP): retired. Side Gate loses its events (retention) and is
        # deleted. Both snapshots and both cameras' Home Assistant configs go; Front Door's stay.
        write_config(tmp_path, accounts=with_cameras("Front Door"))
        assert "retired 1" in await reload_accounts(daemon.services)
        await daemon.services.db.write(lambda: AlarmEvent.delete().where(AlarmEvent.camera == gate["id"]).execute())
        status, outcome = await daemon.api("DELETE", f"/api/cameras/{gate['id']}", token)
        assert status == 200 and outcome["outcome"] == "deleted"
        await wait_cleared(daemon, [2, gate["id"]])
        held = await retained()
        assert held[snapshot_topic(1)][:3] == b"\xff\xd8\xff" and all(held[t] for t in discovery_topics(1))
        for camera in (2, gate["id"]):
            assert snapshot_topic(camera) not in held
            assert not set(discovery_topics(camera)) & set(held)

    # Front Door is retired while vmond is down: at the next start its snapshot goes as well.
    config = make_config(mqtt=mqtt_settings(broker.port, homeassistant_discovery=True), video={"enabled": False},
                         accounts=with_cameras())
    async with running(config) as services:
        await wait_cleared(Daemon(services), [1])
    held = await retained()
    assert held[f"{BASE}/available"] == b"stopped"
    assert not [topic for topic in held if topic.startswith(f"{BASE}/cameras/") or "/camera_" in topic]


async def wait_cleared(daemon: Daemon, cameras: list[int]) -> None:
    """Until the broker acknowledged the removal of these cameras' snapshots (vmond then forgets them)."""
    mqtt = daemon.services.mqtt
    assert mqtt is not None
    await wait_until(lambda: not set(cameras) & set(mqtt._state.snapshots) and not mqtt._snapshots.clearing,
                     timeout=10)


async def test_a_camera_deleted_while_cameras_are_announced_loses_its_configs_before_its_snapshot(
        make_config: Callable[..., Config], broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletion lands while the announcer is between reading the cameras and publishing: the next pass
    takes the camera's Home Assistant configs back, and only then its snapshot, so a station that sees the
    snapshot gone sees the configs gone too."""
    async with mqtt_daemon(make_config, broker.port, homeassistant_discovery=True) as daemon:
        await daemon.add_user()
        token = await daemon.token()
        status, gate = await daemon.api("POST", "/api/cameras", token, json={"account_id": 1, "name": "Side Gate"})
        assert status == 201
        camera = gate["id"]
        mail = distinct(sample(MAIL), 7)
        assert (await daemon.send(mail, to=gate["smtp_address"]))["data"][0] == 250
        await daemon.wait_idle()
        mqtt = daemon.services.mqtt
        await wait_until(lambda: camera in mqtt._state.snapshots and camera in mqtt._state.announced, timeout=10)
        watcher = Subscriber(broker.port, [snapshot_topic(camera), HA])
        try:
            await watcher.ready()
            reading = asyncio.Event()
            loop = asyncio.get_running_loop()

            def slow_devices() -> dict[int, dict[str, Any]]:
                devices = active_camera_devices()
                loop.call_soon_threadsafe(reading.set)
                time.sleep(0.5)  # the cameras are read; the deletion comes before they are published
                return devices

            monkeypatch.setattr(discovery, "active_camera_devices", slow_devices)
            mqtt.refresh_discovery()
            await asyncio.wait_for(reading.wait(), 5)
            await daemon.services.db.write(lambda: AlarmEvent.delete().where(AlarmEvent.camera == camera).execute())
            status, outcome = await daemon.api("DELETE", f"/api/cameras/{camera}", token)
            assert status == 200 and outcome["outcome"] == "deleted"

            def cleared(topic: str) -> float | None:
                return next((m.at for m in list(watcher.messages) if m.topic == topic and not m.payload), None)

            await wait_until(lambda: cleared(snapshot_topic(camera)) is not None, timeout=10)
            snapshot_gone = cleared(snapshot_topic(camera))
            configs_gone = [cleared(topic) for topic in discovery_topics(camera)]
            assert None not in configs_gone, "the snapshot went while Home Assistant still had the camera"
            assert max(configs_gone) <= snapshot_gone  # type: ignore[type-var]
        finally:
            watcher.close()
