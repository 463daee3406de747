"""What a central station needs from an edge, against a real mosquitto: ids unique across sites, the heartbeat."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import sample
from mosquitto import Mosquitto, Subscriber
from test_mqtt import BASE, EVENTS, MAIL, STATUS, events_on, mqtt_daemon
from test_mqtt_schema import check_message

from vmond.config import Config
from vmond.mqtt import forwarder as forwarder_module

ALARMS = f"{BASE}/alarms"

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture
def station(broker: Mosquitto) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker.port, [f"{BASE}/#"])
    yield subscriber
    subscriber.close()


async def test_events_and_alarms_carry_an_id_unique_across_sites(
        make_config: Callable[..., Config], broker: Mosquitto, station: Subscriber) -> None:
    await station.ready()
    async with mqtt_daemon(make_config, broker.port) as daemon:
        await daemon.add_user()
        token = await daemon.token()
        await daemon.send(sample(MAIL))
        message = (await station.wait_for(lambda: events_on(station), what="events message"))[0]
        event = message["event"]
        assert event["uid"] == f"test-site:{event['id']}"
        check_message(EVENTS, message)
        status, alarm = await daemon.api("POST", f"/api/events/{event['id']}/alarm", token)
        assert status == 201, alarm
        assert "uid" not in alarm  # the appliance's own API is unchanged: its ids are unique there
        alarms = await station.wait_for(lambda: [json.loads(m.payload) for m in station.on(ALARMS)], what="alarm")
        assert alarms[0]["alarm"]["uid"] == f"test-site:{alarm['id']}"
        if isinstance(alarms[0]["alarm"].get("event"), dict):
            assert alarms[0]["alarm"]["event"]["uid"] == event["uid"]
        check_message(ALARMS, alarms[0])


async def test_the_status_is_a_retained_heartbeat(make_config: Callable[..., Config], broker: Mosquitto,
                                                  station: Subscriber, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "STATUS_INTERVAL", 0.3)
    await station.ready()
    async with mqtt_daemon(make_config, broker.port):
        def beats() -> list[dict[str, Any]]:
            found = [json.loads(m.payload) for m in station.on(STATUS)]
            return found if len({beat["heartbeat_at"] for beat in found}) >= 3 else []

        found = await station.wait_for(beats, what="three heartbeats")
        times = [datetime.fromisoformat(beat["heartbeat_at"]) for beat in found]
        assert times == sorted(times) and times[0] < times[-1]
        for beat in found:
            check_message(STATUS, beat)
        late = await Subscriber(broker.port, [STATUS]).ready()  # a central that starts later sees the last one
        try:
            retained = await late.wait_for(lambda: late.on(STATUS), what="the retained status")
            assert retained[0].retain and "heartbeat_at" in json.loads(retained[0].payload)
        finally:
            late.close()

