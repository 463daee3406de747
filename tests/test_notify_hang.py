"""Notifications against targets that never let go, and a database that cannot record: a target that trickles its
answer (so Apprise's per-read timeouts never fire) delays only itself and never the daemon's exit nor
``vmond notify-test``'s; a send whose outcome cannot be written is not sent again while the write is retried."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest
from conftest import Daemon, distinct, sample
from helpers import wait_until
from notify_sinks import HttpReceiver, TrickleServer

from vmond.config import Config
from vmond.daemon import running
from vmond.notify import sender
from vmond.notify.threads import Busy, SendThreads
from vmond.store import notifications


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "BACKOFF", (0.3,))
    monkeypatch.setattr(sender, "SEND_TIMEOUT", 1.5)


async def _raise_alarm(daemon: Daemon, token: str, n: int) -> int:
    assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), n)))["data"][0] == 250
    await daemon.wait_idle()
    event_id = [m.data["id"] for m in daemon.services.bus._history if m.type == "event.created"][-1]
    status, alarm = await daemon.api("POST", f"/api/events/{event_id}/alarm", token)
    assert status == 201
    return int(alarm["id"])


async def test_a_trickling_target_delays_only_itself_and_not_the_exit(
        make_config: Callable[..., Config], quick_retries: None) -> None:
    slow, hook, keyholder = TrickleServer(), HttpReceiver().start(), HttpReceiver().start()
    # Should the sender wait for the hung send after all, the target lets go in the end and the test fails, not hangs.
    release = threading.Timer(40, slow.close)
    release.start()
    config = make_config(notify={"on": ["alarm_raised"], "targets": [
        {"name": "slow", "url": slow.url}, {"name": "hook", "url": hook.url}]}, accounts=[{
            "name": "Test Customer", "contacts": [{"name": "Kim", "phone": "+15550100", "notify_url": keyholder.url}],
            "cameras": [{"name": "Front Door", "smtp_address": "camera-front"}]}])
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            await daemon.add_user("guard1", "guard")
            token = await daemon.token("guard1")
            for n in range(6):  # more alarms than send slots, each with a row for the trickling target
                await _raise_alarm(daemon, token, n)
            await wait_until(lambda: len(hook.refs()) == 6 and len(keyholder.refs()) == 6, timeout=20,
                             what=f"every alarm at the other targets (hook {len(hook.refs())}, "
                                  f"keyholder {len(keyholder.refs())})")
            # The trickling target had one send, never a second beside it: its stuck thread is the only one.
            await wait_until(lambda: services.notifications is not None
                             and services.notifications.status()["stuck"] == 1, timeout=10, what="one stuck send")
            assert (slow.connections, slow.peak) == (1, 1)
            started = time.monotonic()
        assert time.monotonic() - started < 5, "the daemon waited for the hung send"
        assert not slow._stop.is_set()  # it was still trickling: nothing let the sender go but the sender
    finally:
        release.cancel()
        slow.close()
        hook.stop()
        keyholder.stop()


@pytest.mark.parametrize(("outcome", "answer", "entry"), [("sent", 200, "notification.sent"),
                                                        ("failed", 500, "notification.retrying")])
async def test_a_send_whose_outcome_cannot_be_recorded_is_not_sent_again(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch, outcome: str, answer: int,
        entry: str) -> None:
    monkeypatch.setattr(sender, "RECORD_BACKOFF", (0.2,))
    monkeypatch.setattr(sender, "BACKOFF", (60.0,))  # a failed send's own retry comes later than this test
    hook = HttpReceiver().start()
    hook.status = answer
    config = make_config(notify={"on": ["alarm_raised"], "targets": [{"name": "hook", "url": hook.url}]})
    writes: list[float] = []
    real_write = getattr(notifications, outcome)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        writes.append(time.monotonic())
        raise pw.OperationalError("database or disk is full")
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            await daemon.add_user("guard1", "guard")
            token = await daemon.token("guard1")
            monkeypatch.setattr(notifications, outcome, disk_full)
            alarm = await _raise_alarm(daemon, token, 0)
            await wait_until(lambda: len(writes) >= 4, timeout=10, what="the record tried again")
            assert len(hook.received) == 1, f"sent {len(hook.received)} times while it could not be recorded"
            assert min(b - a for a, b in itertools.pairwise(writes)) >= 0.15  # with a pause, not in a tight loop

            monkeypatch.setattr(notifications, outcome, real_write)  # the disk has room again: the record goes in

            async def recorded() -> list[dict[str, Any]]:
                status, body = await daemon.api("GET", f"/api/alarms/{alarm}", token)
                return [a for a in body["audit"] if a["action"] == entry]
            deadline = time.monotonic() + 10
            while not (trail := await recorded()):
                assert time.monotonic() < deadline, "the outcome was never recorded"
                await asyncio.sleep(0.1)
            assert trail[0]["detail"]["attempts"] == 1 and trail[0]["detail"]["ref"] in hook.received[0]["message"]
            assert len(hook.received) == 1
    finally:
        hook.stop()


def test_notify_test_exits_at_its_deadline_when_a_target_hangs(tmp_path: Any) -> None:
    slow = TrickleServer()
    (tmp_path / "vmond.yaml").write_text(
        f"storage:\n  data_dir: data\nnotify:\n  targets:\n    - {{name: slow, url: \"{slow.url}\"}}\n")
    # The command as installers run it, with its 30 s deadline shortened to 1 s.
    script = ("import sys; from vmond.notify import testsend; testsend.TIMEOUT = 1.0; from vmond.cli import main; "
              f"sys.exit(main(['notify-test', '--config', {str(tmp_path / 'vmond.yaml')!r}]))")
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("vmond notify-test did not exit while the target hung")
    finally:
        took = time.monotonic() - started
        slow.close()
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "slow: failed: no answer within 1 s"
    assert slow.connections == 1
    assert took < 10, f"exited {took:.1f} s after it started"  # the deadline, plus starting Python and Apprise


def test_send_threads_one_per_key_and_the_stuck_ones_bounded() -> None:
    gates = {key: threading.Event() for key in "abc"}
    threads = SendThreads("test", max_stuck=2)
    a = threads.start("a", gates["a"].wait)
    with pytest.raises(Busy):
        threads.start("a", gates["a"].wait)  # one call per key at a time
    b = threads.start("b", gates["b"].wait)
    threads.overdue("a")
    threads.overdue("b")
    assert threads.stuck() == 2 and threads.full() and threads.busy() == {"a", "b"}
    with pytest.raises(Busy):
        threads.start("c", gates["c"].wait)  # too many stuck: nothing new starts
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("test-"))
    gates["a"].set()
    assert a.result(timeout=5) is True
    assert threads.stuck() == 1 and threads.busy() == {"b"} and not threads.full()
    c = threads.start("c", gates["c"].wait)
    gates["b"].set()
    gates["c"].set()
    assert b.result(timeout=5) and c.result(timeout=5)
    assert threads.busy() == set() and threads.stuck() == 0
