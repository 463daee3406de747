"""The central benchmark's fake sites (bench/sites.py) publish what an edge publishes: each kind of message they
make is checked against schema/mqtt-messages.json field by field, as the MQTT tests check a real edge's."""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from test_mqtt_schema import check_message

from vmond.store.messages import Topics
from vmond.store.remote import result_payload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from sites import Site, record_template  # noqa: E402 - bench/ is not a package


def test_every_message_of_a_fake_site_is_valid(tmp_path: Path) -> None:
    template = record_template(tmp_path, cameras=3)
    site = Site(7, Topics("vmond", "bench-site-0007"), template)
    rng = random.Random(1)

    event_id, new = site.new_event("[b1]", rng)
    update, alarm = site.new_alarm(event_id)
    messages = {
        site.topics.config: json.loads(site.config_payload()),
        site.topics.status: json.loads(site.status_payload()),
        f"{site.topics.events}#new": json.loads(new),
        f"{site.topics.events}#update": json.loads(update),
        site.topics.alarms: json.loads(alarm),
        site.topics.command_results: json.loads(result_payload(site.id, "c-1", "dismiss", None, datetime.now(UTC))),
    }
    for topic, message in messages.items():
        check_message(topic.split("#")[0], message)

    assert messages[f"{site.topics.events}#new"]["event"]["uid"] == f"bench-site-0007:{event_id}"
    assert messages[f"{site.topics.events}#new"]["event"]["subject"].startswith("[b1] ")
    assert messages[f"{site.topics.events}#update"]["event"]["status"] == "alarmed"
    assert messages[site.topics.alarms]["alarm"]["event_id"] == event_id
    assert messages[site.topics.config]["site"]["id"] == "bench-site-0007"
    assert len(messages[site.topics.config]["cameras"]) == 3
    # the media ids are the site's own, one per picture, never repeated
    _, second = site.new_event("[b2]", rng)
    ids = [image["id"] for payload in (new, second) for image in json.loads(payload)["event"]["images"]]
    assert len(ids) == len(set(ids)) == 4

