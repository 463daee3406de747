"""Two sites and a central station, all three ``vmond run`` processes on one mosquitto (issue 18): what each edge
records reaches the central's one wall with its pictures, the central's actions reach the right edge and come
back done, an edge's kill -9 raises site_offline on the central and its return closes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from centralsite import QUICK_RECONNECT, Central, EdgeProcess, central_process, poll
from conftest import sample, smtp_send, write_config
from daemon_process import process_with_admin
from mosquitto import Mosquitto

pytestmark = pytest.mark.slow
MAIL = "hikvision-ipc-intrusion.eml"
SECRETS = {"site-a": "secret-of-site-a", "site-b": "secret-of-site-b"}


@contextlib.contextmanager
def edge_at(tmp_path: Path, broker: Mosquitto, site: str) -> Iterator[tuple[EdgeProcess, Central]]:
    """An edge process for *site*, and its API (the same client as the central's, as its admin)."""
    directory = tmp_path / site
    directory.mkdir()
    config = write_config(directory, site={"id": site, "name": site.replace("-", " ").title()},
                          mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port, "commands": True,
                                "command_secret": SECRETS[site], "publish_media": "thumbnails"})
    with process_with_admin(directory, config) as process:
        edge = EdgeProcess(process)
        edge.start()
        yield edge, Central(process, directory)
        if process.popen is not None and process.popen.poll() is None:
            assert process.stop() == 0


async def site_events(central: Central, site: str) -> list[dict[str, Any]]:
    events = await central.list(f"/api/events?status=all&site={site}", "events")
    return [e for e in events if e["kind"] != "site_offline"]


async def test_two_sites_on_one_central_both_ways(tmp_path: Path, broker: Mosquitto) -> None:
    secret_file = tmp_path / "site-b.secret"
    secret_file.write_text(SECRETS["site-b"] + "\n")
    sites = [{"id": "site-a", "command_secret": SECRETS["site-a"]},
             {"id": "site-b", "command_secret_file": str(secret_file)}]
    with edge_at(tmp_path, broker, "site-a") as (edge_a, api_a), edge_at(tmp_path, broker, "site-b") as (_, api_b), \
            central_process(tmp_path / "central", broker.port, QUICK_RECONNECT, sites=sites,
                            site_silence="3s") as central:
        for api in (api_a, api_b):
            reply = await asyncio.to_thread(smtp_send, api.process.smtp_port, sample(MAIL),
                                            "camera-front@monitor.local")
            assert reply["data"][0] == 250
        [event_a] = await poll(lambda: site_events(central, "site-a"), "site A's event on the central", 20)
        [event_b] = await poll(lambda: site_events(central, "site-b"), "site B's event on the central", 20)
        assert event_a["site"] == {"id": "site-a", "name": "Site A"} and event_b["site"]["name"] == "Site B"
        [edge_event_a] = await api_a.list("/api/events", "events")
        [edge_event_b] = await api_b.list("/api/events", "events")

        # The picture the central shows is the site's, byte for byte (its thumbnail came eagerly).
        async def thumbnail_of(api: Central, event: dict[str, Any]) -> bytes | None:
            status, _, body = await api.fetch(event["images"][0]["thumbnail_url"])
            return body if status == 200 else None

        assert await poll(lambda: thumbnail_of(central, event_a), "site A's thumbnail on the central") == \
            await thumbnail_of(api_a, edge_event_a)

        # The central dismisses A's event: A has it dismissed by the central's operator, B is untouched.
        status, _ = await central.call("POST", f"/api/events/{event_a['id']}/dismiss")
        assert status == 202

        async def dismissed_at_a() -> dict[str, Any] | None:
            event = await api_a.get(f"/api/events/{edge_event_a['id']}")
            return event if event["status"] == "dismissed" else None

        dismissed = await poll(dismissed_at_a, "the dismissal at site A", 20)
        assert "admin at Central One dismissed the event" in [entry["text"] for entry in dismissed["audit"]]
        assert (await api_b.get(f"/api/events/{edge_event_b['id']}"))["status"] == "active"

        # The central raises an alarm on B's event, notes and resolves it: all of it happens at B.
        assert (await central.call("POST", f"/api/events/{event_b['id']}/alarm"))[0] == 202
        [alarm] = await poll(lambda: central.list("/api/alarms?state=all", "alarms"), "B's alarm on the central", 20)
        assert alarm["site"]["id"] == "site-b"
        status, refused = await central.call("POST", f"/api/events/{event_b['id']}/dismiss")
        assert status == 409 and "is an alarm" in refused["error"]  # as an appliance answers, nothing sent
        assert (await central.call("POST", f"/api/alarms/{alarm['id']}/notes", {"text": "Keyholder called"}))[0] == 202
        assert (await central.call("POST", f"/api/alarms/{alarm['id']}/resolve",
                                   {"code": "false_alarm", "text": "a fox"}))[0] == 202

        async def resolved_at_b() -> dict[str, Any] | None:
            alarms = await api_b.list("/api/alarms?state=all", "alarms")
            return alarms[0] if alarms and alarms[0]["state"] == "resolved" else None

        resolved = await poll(resolved_at_b, "the resolution at site B", 20)
        detail = await api_b.get(f"/api/alarms/{resolved['id']}")
        assert [n["text"] for n in detail["notes"]] == ["Keyholder called"]
        assert resolved["resolved_by"]["username"] == "admin at Central One"
        assert await api_a.list("/api/alarms?state=all", "alarms") == []

        # Site A killed: site_offline on the central, closed when A is back; B stays online throughout.
        edge_a.kill()

        async def offline(site: str) -> list[dict[str, Any]]:
            return [e for e in await central.list(f"/api/events?site={site}", "events") if e["kind"] == "site_offline"]

        [offline_a] = await poll(lambda: offline("site-a"), "site A offline on the central", 10)
        assert await offline("site-b") == []
        await asyncio.to_thread(edge_a.start)

        async def closed() -> bool:
            return (await central.get(f"/api/events/{offline_a['id']}"))["status"] != "active"

        await poll(closed, "site A's return closing its site_offline", 20)
        sites_now = {s["id"]: s["online"] for s in (await central.get("/api/sites"))["sites"]}
        assert sites_now == {"site-a": True, "site-b": True}
