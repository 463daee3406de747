"""Notifications across kill -9: a message marked sent is not sent again after the restart, and one still waiting
for its receiver is sent after it, once the receiver answers. Delivery is at least once with a stable Ref; these
show where it goes no further than once. And across SIGTERM: a send that hangs does not keep vmond from stopping."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import sample, smtp_send, write_config
from daemon_process import DaemonProcess, process_with_admin
from notify_sinks import HttpReceiver, TrickleServer

pytestmark = pytest.mark.slow


def _post(process: DaemonProcess, path: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{process.web_port}{path}", method="POST", data=b"{}",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _poll(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def _raise_alarm(process: DaemonProcess, token: str, camera: str = "camera-front") -> int:
    assert smtp_send(process.smtp_port, sample("hikvision-ipc-intrusion.eml"), f"{camera}@monitor.local")["data"][0] \
        == 250
    before: set[int] = set()

    def new_event() -> bool:
        events = process.get("/api/events", token)[1]["events"]
        fresh = [e["id"] for e in events if e["status"] == "active"]
        before.update(fresh)
        return bool(fresh)
    _poll(new_event, 10, "the event on the wall")
    status, alarm = _post(process, f"/api/events/{max(before)}/alarm", token)
    assert status == 201
    return int(alarm["id"])


def _sent(process: DaemonProcess, token: str, alarm_id: int) -> list[dict[str, Any]]:
    audit = process.get(f"/api/alarms/{alarm_id}", token)[1]["audit"]
    return [a for a in audit if a["action"] == "notification.sent"]


def test_kill_9_neither_repeats_a_sent_notification_nor_loses_a_waiting_one(tmp_path: Path) -> None:
    hook = HttpReceiver().start()
    config = write_config(tmp_path, notify={"targets": [{"name": "hook", "url": hook.url}], "on": ["alarm_raised"]})
    try:
        with process_with_admin(tmp_path, config) as process:
            process.start()
            token = process.token()
            first = _raise_alarm(process, token)
            _poll(lambda: _sent(process, token, first), 15, "the first alarm's notification marked sent")
            assert len(hook.refs()) == 1

            hook.status = 500  # the receiver fails: the second alarm's notification waits, retried
            second = _raise_alarm(process, token, "camera-back")
            _poll(lambda: len(hook.received) >= 2, 15, "a first, failed attempt for the second alarm")
            assert process.stop(signal.SIGKILL) == -signal.SIGKILL

            hook.status = 200
            process.start()
            token = process.token()
            _poll(lambda: _sent(process, token, second), 30, "the second alarm's notification after the restart")
            refs = hook.refs()
            assert len(refs) == 2 and len(set(refs)) == 2, refs  # the first not again, the second once
            assert _sent(process, token, first)[0]["detail"]["ref"] == refs[0]
            assert _sent(process, token, second)[0]["detail"]["ref"] == refs[1]
    finally:
        hook.stop()


def test_sigterm_stops_vmond_promptly_while_a_send_hangs(tmp_path: Path) -> None:
    slow = TrickleServer()  # answers a byte a second for ever: Apprise's per-read timeouts never fire
    config = write_config(tmp_path, notify={"targets": [{"name": "slow", "url": slow.url}], "on": ["alarm_raised"]})
    try:
        with process_with_admin(tmp_path, config) as process:
            process.start()
            _raise_alarm(process, process.token())
            _poll(lambda: slow.connections == 1, 15, "the send to the trickling target under way")
            started = time.monotonic()
            assert process.stop(signal.SIGTERM, timeout=30) == 0
            assert time.monotonic() - started < 10, "vmond waited for the hung send"
            assert slow.connections == 1 and not slow._stop.is_set()  # it still hung when vmond had gone
    finally:
        slow.close()
