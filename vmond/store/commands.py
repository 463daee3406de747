"""Commands from a central station (issue 18): the signed envelope read and checked, before anything is applied.

A command arrives on ``<prefix>/<site>/commands`` as ``{"command": "<the command as JSON text>", "hmac": "<hex
HMAC-SHA256 of that text's UTF-8 bytes with mqtt.command_secret>"}``. The command is ``{"id", "site", "action",
"event_id" | "alarm_id", "user", "central", "at", ...}`` with per action: note ``{"text"}``, step ``{"n",
"done"}``, resolve ``{"code", "text"}``, acknowledge ``{"take_over"}``, media ``{"media_ids"}``.

:func:`read_command` checks the signature (in constant time), the site, the time window and the shape, and
raises :class:`CommandRefused` with the reason in words; the id it carries (when the text was readable) lets the
refusal be answered. Pure: no database, no clock of its own (the caller passes *now*).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ACTIONS = ("dismiss", "restore", "alarm", "acknowledge", "note", "step", "resolve", "media")
EVENT_ACTIONS = ("dismiss", "restore", "alarm", "media")  # the others work on an alarm (by alarm_id or event_id)
MAX_PAYLOAD = 64 * 1024  # bytes: a command is a few hundred; anything this large is not one
MAX_ID = 100
MAX_NAME = 100  # user and central names
MAX_TEXT = 4000  # a note's or a resolution's text (as the dashboard allows)
MAX_MEDIA_IDS = 100
FUTURE_SKEW = timedelta(minutes=5)  # a command stamped further ahead is refused: the clocks disagree too much


class CommandRefused(ValueError):
    """The command is not applied; ``command_id`` and ``action`` (when known) let the refusal be answered."""

    def __init__(self, error: str, command_id: str | None = None, action: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.command_id = command_id
        self.action = action


@dataclass(frozen=True)
class Command:
    id: str
    action: str
    user: str
    central: str
    at: datetime
    event_id: int | None = None
    alarm_id: int | None = None
    args: dict[str, Any] = field(default_factory=dict)  # the action's own fields, checked

    @property
    def who(self) -> str:
        """How the audit trail names who sent it."""
        return f"{self.user} at {self.central}"

    def remote(self) -> dict[str, str]:
        """The audit entry's ``remote`` detail."""
        return {"user": self.user, "central": self.central, "command_id": self.id}


def sign(command_text: str, secret: str) -> str:
    """The hex HMAC-SHA256 of *command_text* (UTF-8) with *secret*: what a central puts in ``hmac``."""
    return hmac.new(secret.encode(), command_text.encode(), hashlib.sha256).hexdigest()


def envelope(command: dict[str, Any], secret: str) -> bytes:
    """A signed MQTT payload for *command* (for a central, and for tests)."""
    text = json.dumps(command, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"command": text, "hmac": sign(text, secret)}).encode()


def read_command(payload: bytes, secret: str, site: str, max_age: float, now: datetime) -> Command:
    """The command in *payload*, checked; :class:`CommandRefused` with the reason otherwise."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandRefused(f"the command is larger than {MAX_PAYLOAD} bytes")
    try:
        outer = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CommandRefused("the payload is not JSON") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("command"), str) \
            or not isinstance(outer.get("hmac"), str):
        raise CommandRefused('the payload is not {"command": "<JSON text>", "hmac": "<hex>"}')
    text: str = outer["command"]
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    command_id = body.get("id") if isinstance(body, dict) and _is_id(body.get("id")) else None
    action = body.get("action") if isinstance(body, dict) and body.get("action") in ACTIONS else None
    if not hmac.compare_digest(sign(text, secret), outer["hmac"].strip().lower()):
        raise CommandRefused("bad signature (hmac): refused", command_id, action)
    if not isinstance(body, dict):
        raise CommandRefused("the command is not a JSON object")
    try:
        return _checked(body, site, max_age, now)
    except CommandRefused as exc:
        exc.command_id, exc.action = command_id, action
        raise


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def _name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise CommandRefused(f"`{key}` must be a name of 1 to {MAX_NAME} characters")
    return value.strip()


def _positive_int(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CommandRefused(f"`{key}` must be a positive integer")
    return value


def _checked(body: dict[str, Any], site: str, max_age: float, now: datetime) -> Command:
    if not _is_id(body.get("id")):
        raise CommandRefused(f"`id` must be a string of 1 to {MAX_ID} characters")
    if body.get("site") != site:
        raise CommandRefused(f"the command is for site {body.get('site')!r}, this is {site!r}")
    action = body.get("action")
    if action not in ACTIONS:
        raise CommandRefused(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    at = _when(body.get("at"))
    if at < now - timedelta(seconds=max_age):
        raise CommandRefused(f"expired: sent at {at.isoformat()}, older than mqtt.command_max_age")
    if at > now + FUTURE_SKEW:
        raise CommandRefused(f"sent at {at.isoformat()}, more than 5 minutes in the future (check the clocks)")
    has_event, has_alarm = body.get("event_id") is not None, body.get("alarm_id") is not None
    if has_event == has_alarm:
        raise CommandRefused("give either `event_id` or `alarm_id`")
    if action in EVENT_ACTIONS and not has_event:
        raise CommandRefused(f"`{action}` needs `event_id`")
    return Command(id=body["id"], action=action, user=_name(body, "user"), central=_name(body, "central"), at=at,
                   event_id=_positive_int(body["event_id"], "event_id") if has_event else None,
                   alarm_id=_positive_int(body["alarm_id"], "alarm_id") if has_alarm else None,
                   args=_args(action, body))


def _when(value: Any) -> datetime:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None:
        raise CommandRefused("`at` must be an ISO 8601 time")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _text(body: dict[str, Any], key: str, required: bool) -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise CommandRefused(f"`{key}` must be a text of at most {MAX_TEXT} characters")
    if required and not value.strip():
        raise CommandRefused(f"`{key}` is required")
    return value


def _args(action: str, body: dict[str, Any]) -> dict[str, Any]:
    if action == "note":
        return {"text": _text(body, "text", required=True)}
    if action == "step":
        done = body.get("done", True)
        if not isinstance(done, bool):
            raise CommandRefused("`done` must be true or false")
        return {"n": _positive_int(body.get("n"), "n"), "done": done}
    if action == "resolve":
        code = body.get("code")
        if code is not None and not isinstance(code, str):
            raise CommandRefused("`code` must be a resolution code")
        return {"code": (code or "").strip(), "text": _text(body, "text", required=False)}
    if action == "acknowledge":
        take_over = body.get("take_over", False)
        if not isinstance(take_over, bool):
            raise CommandRefused("`take_over` must be true or false")
        return {"take_over": take_over}
    if action == "media":
        ids = body.get("media_ids")
        if ids is None:
            return {"media_ids": None}
        if not isinstance(ids, list) or len(ids) > MAX_MEDIA_IDS:
            raise CommandRefused(f"`media_ids` must be a list of at most {MAX_MEDIA_IDS} ids")
        return {"media_ids": [_positive_int(i, "media_ids[]") for i in ids]}
    return {}
