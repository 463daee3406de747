"""``schema/mqtt-messages.json`` and :func:`check_message`, which the MQTT tests run on every message they receive.

The schema is standard JSON Schema (2020-12). The ``jsonschema`` package is in neither the project's
dependencies nor Debian 12's default install here, so the check below is a small validator for the subset of
keywords the schema uses; where ``jsonschema`` is importable the same messages are validated with it as well.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from vmond.mqtt.topics import event_payload

SCHEMA_PATH = Path(__file__).parent.parent / "schema" / "mqtt-messages.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())

try:
    import jsonschema
except ImportError:  # pragma: no cover - depends on the machine
    jsonschema = None

_CHECKED = {"$ref", "type", "enum", "const", "required", "properties", "items", "minItems", "anyOf", "pattern",
            "minLength", "minimum"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
# keywords that only annotate; the subset validator knows them and deliberately checks nothing
_ANNOTATIONS = {"description", "format", "contentEncoding", "contentMediaType", "title", "$schema", "$id",
                "x-topics", "$defs"}


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
        elif keyword == "minimum" and _is_type(value, "number") and value < rule:
            found.append(f"{path}: below {rule}")
        elif keyword not in _CHECKED | _ANNOTATIONS:
            raise AssertionError(f"the subset validator does not know {keyword!r}: teach it")
    return found


def definition_for(topic: str) -> str:
    """The schema definition of a topic's payload (by its shape, as in the schema's ``x-topics``)."""
    if topic.endswith("/config"):
        return "homeassistant_config"
    parts = topic.split("/")
    if len(parts) >= 2 and parts[-2].isdigit() and parts[-3] == "cameras":
        return {"event": "camera_event", "snapshot": "snapshot"}[parts[-1]]
    return {"events": "events_message", "alarms": "alarms_message", "status": "status",
            "available": "availability"}[parts[-1]]


def check_message(topic: str, message: Any) -> None:
    """Assert that *message* (decoded JSON, or text for ``available``) is valid for *topic*."""
    definition = definition_for(topic)
    problems = errors(message, {"$ref": f"#/$defs/{definition}"})
    assert not problems, f"{topic}: {problems}"
    if jsonschema is not None:
        jsonschema.validate(message, {**SCHEMA, "anyOf": [{"$ref": f"#/$defs/{definition}"}]})


def sample_event(**changes: Any) -> dict[str, Any]:
    event = {"id": 7, "camera": {"id": 1, "name": "Front Door", "smtp_address": "camera-front@monitor.local"},
             "account": {"id": 1, "name": "Test Customer"}, "received_at": "2024-05-01T10:00:00+00:00",
             "updated_at": "2024-05-01T10:00:00+00:00", "event_time": "2024-05-01T10:00:00+00:00",
             "event_type": "Motion", "subject": "Alarm", "channel": None, "vendor": None, "status": "active",
             "is_test": False, "flags": [], "mail_count": 1,
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


@pytest.mark.parametrize(("change", "complaint"), [
    ({"id": "not-unique"}, "does not match"),
    ({"type": "created"}, "is not one of"),
    ({"event": sample_event(status="closed")}, "$.event.status"),
    ({"event": sample_event(images=[{"url": "/media/3"}])}, "'thumbnail_url' is required"),
    ({"event": sample_event(camera={"id": "1", "name": "x"})}, "$.event.camera"),
    ({"event": {k: v for k, v in sample_event().items() if k != "video"}}, "'video' is required"),
])
def test_the_check_catches_malformed_messages(change: dict[str, Any], complaint: str) -> None:
    message = {**json.loads(event_payload("site-1", "new", sample_event())), **change}
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_message("vmond/site-1/events", message)


def test_availability_and_topics() -> None:
    check_message("vmond/s/available", "stopped")
    with pytest.raises(AssertionError):
        check_message("vmond/s/available", "gone")
    assert definition_for("vmond/s/cameras/12/event") == "camera_event"
    assert definition_for("homeassistant/image/vmond_s/camera_12/config") == "homeassistant_config"
