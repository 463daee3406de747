"""``schema/mqtt-messages.json`` and :func:`check_message`, which the MQTT tests run on every message they receive;
and every kind of message vmond publishes, taken from a real broker, checked against it field by field.

The schema is standard JSON Schema (2020-12). The ``jsonschema`` package is in neither the project's
dependencies nor Debian 12's default install here, so the check below is a small validator for the subset of
keywords the schema uses; where ``jsonschema`` is importable the same messages are validated with it as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, Daemon, sample
from mailmaker import dvr_mail
from mosquitto import Mosquitto, Subscriber

from vmond.config import Config
from vmond.daemon import running
from vmond.mqtt import forwarder as forwarder_module
from vmond.store.alarms import PUBLISHED_ACTIONS
from vmond.store.messages import alarm_payload, event_payload, with_uid

SCHEMA_PATH = Path(__file__).parent.parent / "schema" / "mqtt-messages.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())

try:
    import jsonschema
except ImportError:  # pragma: no cover - depends on the machine
    jsonschema = None

_CHECKED = {"$ref", "type", "enum", "const", "required", "properties", "items", "minItems", "anyOf", "pattern",
            "minLength", "maxLength", "minimum", "maximum", "additionalProperties"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
# keywords that only annotate; the subset validator knows them and deliberately checks nothing
_ANNOTATIONS = {"description", "format", "contentEncoding", "contentMediaType", "contentSchema", "title", "$schema",
                "$id", "x-topics", "$defs"}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """What is wrong with *value* under *schema* (a subset of JSON Schema 2020-12: the keywords used here)."""
    found: list[str] = []
    for keyword, rule in schema.items():
        if keyword == "$ref":
            assert rule.startswith("#/$defs/"), rule
            found += errors(value, SCHEMA["$defs"][rule.removeprefix("#/$defs/")], path)
        elif keyword == "type":
            names = rule if isinstance(rule, list) else [rule]
            if not any(_is_type(value, name) for name in names):
                found.append(f"{path}: {value!r:.60} is not of type {rule}")
                return found
        elif keyword == "enum" and value not in rule:
            found.append(f"{path}: {value!r:.60} is not one of {rule}")
        elif keyword == "const" and value != rule:
            found.append(f"{path}: {value!r:.60} is not {rule!r}")
        elif keyword == "required" and isinstance(value, dict):
            found += [f"{path}: {key!r} is required" for key in rule if key not in value]
        elif keyword == "properties" and isinstance(value, dict):
            for key, sub in rule.items():
                if key in value:
                    found += errors(value[key], sub, f"{path}.{key}")
        elif keyword == "items" and isinstance(value, list):
            for index, item in enumerate(value):
                found += errors(item, rule, f"{path}[{index}]")
        elif keyword == "minItems" and isinstance(value, list) and len(value) < rule:
            found.append(f"{path}: fewer than {rule} items")
        elif keyword == "anyOf" and all(errors(value, sub, path) for sub in rule):
            found.append(f"{path}: matches none of the alternatives")
        elif keyword == "pattern" and isinstance(value, str) and not re.search(rule, value):
            found.append(f"{path}: {value!r:.60} does not match {rule}")
        elif keyword == "minLength" and isinstance(value, str) and len(value) < rule:
            found.append(f"{path}: shorter than {rule}")
        elif keyword == "maxLength" and isinstance(value, str) and len(value) > rule:
            found.append(f"{path}: longer than {rule}")
        elif keyword == "additionalProperties" and rule is False and isinstance(value, dict):
            found += [f"{path}: {key!r} is not allowed" for key in value if key not in schema.get("properties", {})]
        elif keyword == "minimum" and _is_type(value, "number") and value < rule:
            found.append(f"{path}: below {rule}")
        elif keyword == "maximum" and _is_type(value, "number") and value > rule:
            found.append(f"{path}: above {rule}")
        elif keyword not in _CHECKED | _ANNOTATIONS:
            raise AssertionError(f"the subset validator does not know {keyword!r}: teach it")
    return found


def _applicable(value: Any, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """*schema* and every schema it brings to bear on *value*: ``$ref`` targets and the ``anyOf`` alternatives
    that *value* matches."""
    found = [schema]
    if "$ref" in schema:
        found += _applicable(value, SCHEMA["$defs"][schema["$ref"].removeprefix("#/$defs/")])
    for alternative in schema.get("anyOf", ()):
        if not errors(value, alternative):
            found += _applicable(value, alternative)
    return found


def undocumented(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Keys of *value* that no applicable schema names: a field sent but not described. An object whose schema
    lists no properties at all, or says ``additionalProperties: true`` (Home Assistant's format), is open."""
    schemas = _applicable(value, schema)
    found: list[str] = []
    if isinstance(value, dict):
        declared: dict[str, list[dict[str, Any]]] = {}
        for sub in schemas:
            for key, rule in sub.get("properties", {}).items():
                declared.setdefault(key, []).append(rule)
        closed = declared and not any(sub.get("additionalProperties") is True for sub in schemas)
        for key, item in value.items():
            if key in declared:
                found += [problem for rule in declared[key] for problem in undocumented(item, rule, f"{path}.{key}")]
            elif closed:
                found.append(f"{path}.{key} is sent but not in the schema")
    elif isinstance(value, list):
        for sub in schemas:
            if "items" in sub:
                for index, item in enumerate(value):
                    found += undocumented(item, sub["items"], f"{path}[{index}]")
    return sorted(set(found))


def definition_for(topic: str) -> str:
    """The schema definition of a topic's payload (by its shape, as in the schema's ``x-topics``)."""
    if topic.endswith("/config") and "/vmond_" in topic:
        return "homeassistant_config"
    parts = topic.split("/")
    if len(parts) >= 2 and parts[-2].isdigit() and parts[-3] == "cameras":
        return {"event": "camera_event", "snapshot": "snapshot"}[parts[-1]]
    return {"events": "events_message", "alarms": "alarms_message", "status": "status",
            "available": "availability", "config": "site_config", "commands": "command_envelope",
            "result": "command_result"}[parts[-1]]


def check_message(topic: str, message: Any) -> None:
    """Assert that *message* (decoded JSON, or text for ``available``) is valid for *topic*, and that the schema
    describes every field of it."""
    definition = definition_for(topic)
    problems = errors(message, {"$ref": f"#/$defs/{definition}"})
    assert not problems, f"{topic}: {problems}"
    problems = undocumented(message, {"$ref": f"#/$defs/{definition}"})
    assert not problems, f"{topic}: {problems}"
    if jsonschema is not None:
        jsonschema.validate(message, {**SCHEMA, "anyOf": [{"$ref": f"#/$defs/{definition}"}]})


def sample_event(**changes: Any) -> dict[str, Any]:
    event = {"id": 7, "camera": {"id": 1, "name": "Front Door", "smtp_address": "camera-front@monitor.local"},
             "account": {"id": 1, "name": "Test Customer"}, "received_at": "2024-05-01T10:00:00+00:00",
             "updated_at": "2024-05-01T10:00:00+00:00", "event_time": "2024-05-01T10:00:00+00:00",
             "event_type": "Motion", "subject": "Alarm", "channel": None, "vendor": None, "status": "active",
             "kind": "motion", "priority": 3, "is_test": False, "flags": [], "mail_count": 1,
             "images": [{"id": 3, "url": "/media/3", "thumbnail_url": "/media/3/thumbnail", "width": 640,
                         "height": 480}],
             "video": {"state": "none", "url": None}, "attachments": []}
    return {**event, **changes}


def test_schema_is_well_formed() -> None:
    assert SCHEMA["$schema"].endswith("2020-12/schema")
    for pointer in SCHEMA["x-topics"].values():
        assert pointer.removeprefix("#/$defs/") in SCHEMA["$defs"]
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_payload_builder_matches_the_schema() -> None:
    check_message("vmond/site-1/events", json.loads(event_payload("site-1", "new", sample_event())))


def test_absolute_media_urls_only_with_a_public_url() -> None:
    event = sample_event(video={"state": "ready", "url": "/media/9"},
                         attachments=[{"id": 4, "url": "/media/4", "kind": "attachment", "content_type": "x/y",
                                       "bytes": 1, "name": None}])
    plain = json.loads(event_payload("site-1", "new", event))["event"]
    assert plain == {**event, "uid": "site-1:7"}  # no absolute URLs, and nothing else changed but the site's uid
    message = json.loads(event_payload("site-1", "new", event, "https://monitor.example.com:8443"))
    check_message("vmond/site-1/events", message)
    sent = message["event"]
    assert sent["images"] == [{**event["images"][0], "absolute_url": "https://monitor.example.com:8443/media/3",
                               "absolute_thumbnail_url": "https://monitor.example.com:8443/media/3/thumbnail"}]
    assert sent["video"] == {"state": "ready", "url": "/media/9", "absolute_url": "https://monitor.example.com:8443/media/9"}
    assert sent["attachments"][0]["absolute_url"] == "https://monitor.example.com:8443/media/4"
    assert {k: v for k, v in sent.items() if k not in ("images", "video", "attachments")} == {
        "uid": "site-1:7", **{k: v for k, v in event.items() if k not in ("images", "video", "attachments")}}
    no_clip = json.loads(event_payload("s", "new", sample_event(), "https://m.example"))["event"]["video"]
    assert no_clip == {"state": "none", "url": None, "absolute_url": None}


@pytest.mark.parametrize(("change", "complaint"), [
    ({"id": "not-unique"}, "does not match"),
    ({"type": "created"}, "is not one of"),
    ({"event": sample_event(status="closed")}, "$.event.status"),
    ({"event": sample_event(images=[{"url": "/media/3"}])}, "'thumbnail_url' is required"),
    ({"event": sample_event(camera={"id": "1", "name": "x"})}, "$.event.camera"),
    ({"event": {k: v for k, v in sample_event().items() if k != "video"}}, "'video' is required"),
    ({"event": sample_event(camera_name="x" * 65)}, "$.event.camera_name: longer than 64"),
    ({"event": sample_event(colour="red")}, "$.event.colour is sent but not in the schema"),
    ({"event": sample_event(kind="Person")}, "$.event.kind: 'Person' is not one of"),
    ({"event": sample_event(priority=6)}, "$.event.priority: above 5"),
    ({"event": sample_event(priority=0)}, "$.event.priority: below 1"),
    ({"event": {k: v for k, v in sample_event().items() if k != "priority"}}, "'priority' is required"),
    ({"event": sample_event(video={"state": "none", "url": None, "poster": None})}, "$.event.video.poster is sent"),
])
def test_the_check_catches_malformed_messages(change: dict[str, Any], complaint: str) -> None:
    if "event" in change:  # as the payload builder sends it: with the site's uid
        change = {**change, "event": with_uid("site-1", change["event"])}
    message = {**json.loads(event_payload("site-1", "new", sample_event())), **change}
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_message("vmond/site-1/events", message)


def test_the_check_catches_an_event_or_alarm_without_its_uid() -> None:
    message = json.loads(event_payload("site-1", "new", sample_event()))
    with pytest.raises(AssertionError, match=re.escape("'uid' is required")):
        check_message("vmond/site-1/events", {**message, "event": sample_event()})
    with pytest.raises(AssertionError, match="does not match"):
        check_message("vmond/site-1/events", {**message, "event": {**message["event"], "uid": "7"}})


def test_availability_and_topics() -> None:
    check_message("vmond/s/available", "stopped")
    with pytest.raises(AssertionError):
        check_message("vmond/s/available", "gone")
    assert definition_for("vmond/s/cameras/12/event") == "camera_event"
    assert definition_for("homeassistant/image/vmond_s/camera_12/config") == "homeassistant_config"


def sample_alarm(action: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"id": 1, "event_id": 7, "state": "open", "opened_at": "2024-05-01T10:00:00+00:00", "opened_by": None,
            "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None, "resolved_by": None,
            "resolution": None, "event_type": "Motion", "received_at": "2024-05-01T10:00:00+00:00",
            "event_time": "2024-05-01T10:00:00+00:00", "camera": {"id": 1, "name": "Front Door"},
            "camera_name": None, "channel": None, "account": None,
            "last_action": {"action": action, "detail": detail}}


def test_the_schema_names_exactly_the_actions_that_are_sent() -> None:
    assert SCHEMA["$defs"]["last_action"]["properties"]["action"]["enum"] == list(PUBLISHED_ACTIONS)


@pytest.mark.parametrize(("action", "detail", "complaint"), [
    ("alarm.opened", {"event_id": 7}, "is not one of"),  # what the documentation used to say
    ("alarm.resolved", {"code": "test", "text": ""}, "is not one of"),
    ("alarm.note", {"text": "no id"}, "matches none of the alternatives"),
    ("alarm.open", {"event_id": "7"}, "matches none of the alternatives"),
])
def test_the_check_catches_a_wrong_last_action(action: str, detail: dict[str, Any], complaint: str) -> None:
    message = json.loads(alarm_payload("site-1", "update", sample_alarm(action, detail)))
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_message("vmond/site-1/alarms", message)


# --- what a real broker gets ----------------------------------------------------------------------------------

ATTACHMENT_MAIL = (
    b"Subject: Motion\r\nFrom: cam@cam.lan\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nmotion on the drive\r\n"
    b'--b\r\nContent-Type: application/pdf; name="report.pdf"\r\n\r\n%PDF-1.4 not much of a report\r\n--b--\r\n'
)


async def test_every_message_on_a_real_broker_matches_the_schema(
        make_config: Callable[..., Config], broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "POLL_INTERVAL", 0.1)
    station = await Subscriber(broker.port, ["vmond/test-site/#", "homeassistant/#"]).ready()
    config = make_config(mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port,
                               "homeassistant_discovery": True, "embed_thumbnail": True},
                         web={"public_url": "https://monitor.example.com:8443/"},
                         accounts=[{**BASE_CONFIG["accounts"][0], "action_plan": [{"text": "Call the keyholder"}]}])
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            for user in ("guard1", "guard2"):
                await daemon.add_user(user, "guard")
            first, second = await daemon.token("guard1"), await daemon.token("guard2")
            for raw in (sample("hikvision-ipc-intrusion.eml"), dvr_mail("CAM 2 Garage", "A2", 2), ATTACHMENT_MAIL):
                assert (await daemon.send(raw))["data"][0] == 250
                await daemon.wait_idle()
            status, body = await daemon.api("GET", "/api/events", first)
            event = next(e for e in body["events"] if e["camera_name"] == "CAM 2 Garage")
            # Every alarm action a central station is told about: raised (and taken) by one guard, taken over by
            # another, noted, a step ticked off, resolved.
            status, alarm = await daemon.api("POST", f"/api/events/{event['id']}/alarm", first)
            assert status == 201
            path = f"/api/alarms/{alarm['id']}"
            assert (await daemon.api("POST", f"{path}/acknowledge", second))[0] == 200
            assert (await daemon.api("POST", f"{path}/notes", second, json={"text": "Called the keyholder"}))[0] == 201
            assert (await daemon.api("POST", f"{path}/steps/1", second, json={"done": True}))[0] == 200
            assert (await daemon.api("POST", f"{path}/resolve", second,
                                     json={"code": "false_alarm", "resolution": "a cat"}))[0] == 200

            def alarms() -> list[dict[str, Any]]:
                return [json.loads(m.payload) for m in station.on("vmond/test-site/alarms")]

            def clip_ready() -> bool:
                return any(json.loads(m.payload)["event"]["video"]["state"] == "ready"
                           for m in station.on("vmond/test-site/events"))

            await station.wait_for(lambda: len(alarms()) >= 6 and alarms()[-1]["alarm"]["state"] == "resolved",
                                   what="the alarm's messages")
            await station.wait_for(clip_ready, timeout=30, what="the clip's update")
            await station.wait_for(lambda: station.on("vmond/test-site/status"), what="status")
            await station.wait_for(lambda: station.on(f"vmond/test-site/cameras/{event['camera']['id']}/event"),
                                   what="Home Assistant's camera event")
    finally:
        station.close()

    checked: dict[str, int] = {}
    for message in station.messages:
        if message.topic.endswith("/snapshot") or not message.payload:
            continue  # JPEG bytes, and empty retained messages that remove something
        body = message.payload.decode() if message.topic.endswith("/available") else json.loads(message.payload)
        check_message(message.topic, body)
        checked[definition_for(message.topic)] = checked.get(definition_for(message.topic), 0) + 1
    assert set(checked) == {"availability", "events_message", "alarms_message", "status", "camera_event",
                            "homeassistant_config", "site_config"}

    actions = [(m["type"], m["alarm"]["last_action"]) for m in alarms()]
    assert [a["action"] for _, a in actions] == ["alarm.open", "alarm.acknowledge", "alarm.acknowledge",
                                                  "alarm.note", "alarm.step", "alarm.resolve"]
    assert {a["action"] for _, a in actions} == set(PUBLISHED_ACTIONS)
    guard1 = alarm["acknowledged_by"]["id"]
    assert actions[0] == ("new", {"action": "alarm.open", "detail": {"event_id": event["id"]},
                                  "by": {"id": guard1, "username": "guard1"}})
    assert {a["by"]["username"] for _, a in actions[2:]} == {"guard2"}
    assert actions[2][1]["detail"] == {"took_over_from": guard1}
    assert actions[3][1]["detail"]["text"] == "Called the keyholder"
    assert actions[4][1]["detail"] == {"n": 1, "text": "Call the keyholder"}
    assert actions[5][1]["detail"] == {"code": "false_alarm", "text": "a cat"}
    resolved = alarms()[-1]["alarm"]
    assert (resolved["camera_name"], resolved["channel"], resolved["received_at"]) == (
        "CAM 2 Garage", "2", event["received_at"])
    sent = [json.loads(m.payload)["event"] for m in station.on("vmond/test-site/events")]
    assert any(e["attachments"] and e["attachments"][0]["kind"] == "attachment" for e in sent)
    # The central station gets each event's normalised kind and its priority (the Hikvision mail's "Intrusion
    # Detection" is an intrusion, priority 1 by default; the DVR's motion mail priority 3).
    assert {(e["event_type"], e["kind"], e["priority"]) for e in sent if e["event_type"] == "Intrusion Detection"} == {
        ("Intrusion Detection", "intrusion", 1)}
    assert {(e["kind"], e["priority"]) for e in sent if e["camera_name"] == "CAM 2 Garage"} == {("motion", 3)}
    assert any("thumbnail" in e for e in sent)
    # web.public_url: every media URL also absolute, beside the relative one.
    public = "https://monitor.example.com:8443"
    for e in sent:
        for image in e["images"]:
            assert image["absolute_url"] == public + image["url"]
            assert image["absolute_thumbnail_url"] == public + image["thumbnail_url"]
        for item in e["attachments"]:
            assert item["absolute_url"] == public + item["url"]
        assert e["video"]["absolute_url"] == (None if e["video"]["url"] is None else public + e["video"]["url"])
    clip = next(e["video"] for e in sent if e["video"]["state"] == "ready")
    assert clip["absolute_url"].startswith(public + "/media/")


def test_commands_and_results_as_the_central_station_sends_and_receives_them() -> None:
    command = {"id": "c-1", "site": "site-1", "action": "resolve", "alarm_id": 4, "user": "op", "central": "Central",
               "at": "2024-05-01T10:00:00+00:00", "code": "false_alarm", "text": "a cat"}
    text = json.dumps(command)
    check_message("vmond/site-1/commands", {"command": text, "hmac": "0" * 64})
    assert not errors(json.loads(text), {"$ref": "#/$defs/command"})
    assert errors({**command, "action": "delete"}, {"$ref": "#/$defs/command"})
    assert errors({**command, "id": "x" * 101}, {"$ref": "#/$defs/command"})
    assert errors({"command": text, "hmac": "not hex"}, {"$ref": "#/$defs/command_envelope"})
    result = {"id": "c-1", "site": "site-1", "action": "resolve", "ok": False,
              "error": "resolved locally at 2024-05-01T10:00:00+00:00 by guard", "at": "2024-05-01T10:00:01+00:00"}
    check_message("vmond/site-1/commands/result", result)
    with pytest.raises(AssertionError, match="'ok' is required"):
        check_message("vmond/site-1/commands/result", {k: v for k, v in result.items() if k != "ok"})
