"""Notifications leave the running daemon through Apprise: to a local HTTP receiver (``json://``) and a local SMTP
sink (``mailto://``); retried after the receiver was down; a target that hangs delays neither the others nor the
wall; the outcome on the alarm's audit trail; an event left untouched notifies as unhandled; ``vmond notify-test``
and the secrecy of the URLs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Daemon, sample
from helpers import free_port, run_cli, wait_until
from notify_sinks import HttpReceiver, SilentServer, SmtpSink
from test_admin_forms import Inputs, post_form
from test_web import browser_session, log_in

from vmond.config import Config
from vmond.daemon import running
from vmond.notify import sender

PUBLIC = "https://monitor.example.com"


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "BACKOFF", (0.3,))
    monkeypatch.setattr(sender, "SEND_TIMEOUT", 1.5)


async def _event(daemon: Daemon, name: str = "hikvision-ipc-intrusion.eml") -> int:
    assert (await daemon.send(sample(name)))["data"][0] == 250
    await daemon.wait_idle()
    return [m.data["id"] for m in daemon.services.bus._history if m.type == "event.created"][-1]


async def _trail(daemon: Daemon, token: str, alarm_id: int) -> list[dict[str, Any]]:
    status, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", token)
    assert status == 200
    return [a for a in alarm["audit"] if a["action"].startswith("notification.")]


async def _wait_trail(daemon: Daemon, token: str, alarm_id: int, check: Callable[[list[dict[str, Any]]], bool],
                      timeout: float = 15.0, what: str = "") -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        trail = await _trail(daemon, token, alarm_id)
        if check(trail):
            return trail
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}; trail {trail}")
        await asyncio.sleep(0.1)


async def test_an_alarm_reaches_http_and_smtp_targets_retried_and_never_held_up_by_a_hanging_one(
        make_config: Callable[..., Config], quick_retries: None) -> None:
    hook, mail, hang = HttpReceiver(), SmtpSink().start(), SilentServer()  # the HTTP receiver is down at first
    config = make_config(web={"listen": "127.0.0.1:0", "public_url": PUBLIC}, notify={"targets": [
        {"name": "hang", "url": hang.url}, {"name": "hook", "url": hook.url}, {"name": "mail", "url": mail.url}]})
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            await daemon.add_user("guard1", "guard")
            token = await daemon.token("guard1")
            event_id = await _event(daemon)
            status, alarm = await daemon.api("POST", f"/api/events/{event_id}/alarm", token)
            assert status == 201

            # The mail goes out at once, while "hang" holds its slot and "hook" is refused.
            await wait_until(lambda: len(mail.messages) == 1, timeout=10, what="the SMTP sink got the alarm")
            recipients, message = mail.messages[0]
            assert recipients == ["duty@example.com"]
            assert "Test Site: Alarm: intrusion at Front Door (Test Customer)" in message
            # Meanwhile the wall takes new events as ever.
            started = time.monotonic()
            second = await _event(daemon, "amcrest-tamper.eml")
            status, listed = await daemon.api("GET", "/api/events", token)
            assert second in [e["id"] for e in listed["events"]] and time.monotonic() - started < 3

            await _wait_trail(daemon, token, alarm["id"], lambda t: any(
                a["action"] == "notification.retrying" and a["detail"]["target"] == "hook" for a in t),
                what="the refused receiver's first failure on the trail")
            hook.start()  # the receiver comes up: the retry gets through
            await wait_until(lambda: len(hook.received) == 1, timeout=10, what="the receiver got the alarm")
            posted = hook.received[0]
            assert posted["title"] == "Test Site: Alarm: intrusion at Front Door (Test Customer)"
            assert f"Link: {PUBLIC}/alarms/{alarm['id']}" in posted["message"]
            assert "Camera: Front Door" in posted["message"] and "Account: Test Customer" in posted["message"]

            trail = await _wait_trail(daemon, token, alarm["id"], lambda t: {"hook", "mail"} <= {
                a["detail"]["target"] for a in t if a["action"] == "notification.sent"}, what="both sent")
            sent = {a["detail"]["target"]: a for a in trail if a["action"] == "notification.sent"}
            assert sent["mail"]["detail"]["attempts"] == 1 and sent["hook"]["detail"]["attempts"] >= 2
            assert sent["hook"]["text"].startswith("vmond notified hook of the alarm (attempt ")
            assert sent["hook"]["detail"]["ref"] in posted["message"]  # the Ref the message carried
            hanging = await _wait_trail(daemon, token, alarm["id"], lambda t: any(
                a["detail"]["target"] == "hang" for a in t), what="the hanging target's failure")
            first = next(a for a in hanging if a["detail"]["target"] == "hang")
            assert (first["action"], first["detail"]["error"]) == ("notification.retrying", "no answer within 1.5 s")
            assert len(hook.received) == 1 and len(mail.messages) == 1  # each once
            status, health = await daemon.api("GET", "/api/health", None)
            assert health["notifications"]["targets"] == 3 and health["notifications"]["sent"] >= 2
    finally:
        hook.stop()
        mail.stop()
        hang.close()


async def test_no_target_secret_reaches_the_log_or_the_trail_at_debug_level(
        make_config: Callable[..., Config], quick_retries: None, caplog: pytest.LogCaptureFixture) -> None:
    hook = HttpReceiver().start()
    good = f"json://user:pw-Hook7x@127.0.0.1:{hook.port}/path-Hook8y"
    broken = f"json://user:pw-Gone5v@127.0.0.1:{free_port()}/path-Gone6w"
    config = make_config(logging={"level": "debug"}, notify={"targets": [
        {"name": "good", "url": good}, {"name": "broken", "url": broken}]})
    caplog.set_level(logging.DEBUG)
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            await daemon.add_user("guard1", "guard")
            token = await daemon.token("guard1")
            _, alarm = await daemon.api("POST", f"/api/events/{await _event(daemon)}/alarm", token)
            trail = await _wait_trail(daemon, token, alarm["id"], lambda t: {"good", "broken"} <= {
                a["detail"]["target"] for a in t}, what="both outcomes")
            assert len(hook.received) == 1
    finally:
        hook.stop()
    said = caplog.text + str(trail)
    assert "broken failed (attempt 1)" in caplog.text  # the failure is logged, by name
    for secret in ("pw-Hook7x", "path-Hook8y", "pw-Gone5v", "path-Gone6w"):
        assert secret not in said, secret


async def test_an_event_nobody_touches_is_notified_once_as_unhandled(make_config: Callable[..., Config]) -> None:
    hook = HttpReceiver().start()
    config = make_config(notify={"targets": [{"name": "hook", "url": hook.url}], "on": ["unhandled"],
                                 "escalate_after": "1s"})
    try:
        async with running(config) as services:
            daemon = Daemon(services)
            await daemon.add_user("guard1", "guard")
            token = await daemon.token("guard1")
            left = await _event(daemon)
            handled = await _event(daemon, "amcrest-tamper.eml")
            assert (await daemon.api("POST", f"/api/events/{handled}/dismiss", token))[0] == 200
            await wait_until(lambda: len(hook.received) == 1, timeout=10, what="the unhandled notification")
            assert hook.received[0]["title"] == "Test Site: Unhandled event: intrusion at Front Door (Test Customer)"
            # A third event, notified in turn, is the sign the check ran again: the first was not sent twice.
            third = await _event(daemon, "reolink-person.eml")
            await wait_until(lambda: len(hook.received) == 2, timeout=10, what="the next unhandled notification")
            assert len(set(hook.refs())) == 2 and third != left
    finally:
        hook.stop()


async def test_notify_test_sends_to_each_target_and_names_failures_without_the_url(tmp_path: Any) -> None:
    hook = HttpReceiver().start()
    refused = f"json://alice:pa55word-x@127.0.0.1:{free_port()}/hook"
    (tmp_path / "vmond.yaml").write_text(
        "storage:\n  data_dir: data\nnotify:\n  targets:\n"
        f"    - {{name: good, url: \"{hook.url}\"}}\n    - {{name: broken, url: \"{refused}\"}}\n")
    config = str(tmp_path / "vmond.yaml")
    try:
        ok = await asyncio.to_thread(run_cli, "notify-test", "good", "--config", config)
        assert (ok.returncode, ok.stdout.strip()) == (0, "good: sent"), ok.stderr
        assert len(hook.received) == 1 and hook.received[0]["title"].endswith("vmond test notification")

        everything = await asyncio.to_thread(run_cli, "notify-test", "--config", config)
        assert everything.returncode == 1
        assert everything.stdout.strip() == "good: sent"
        assert everything.stderr.startswith("broken: failed: ")
        assert "pa55word" not in everything.stderr + everything.stdout

        unknown = await asyncio.to_thread(run_cli, "notify-test", "nobody", "--config", config)
        assert unknown.returncode == 2 and "no notification target named 'nobody' (targets: good, broken)" \
            in unknown.stderr

        checked = await asyncio.to_thread(run_cli, "check-config", config)
        assert checked.returncode == 0 and "pa55word" not in checked.stdout + checked.stderr
    finally:
        hook.stop()


def test_target_urls_are_checked_and_never_echoed(make_config: Callable[..., Config], tmp_path: Any) -> None:
    (tmp_path / "bad.yaml").write_text(
        "notify:\n  targets:\n    - {name: a, url: not-a-url-s3cret}\n    - {name: A, url: \"json://h/x\"}\n"
        "    - {name: typo, url: \"jsonx://hook:pw-s3cret@127.0.0.1/path-s3cret\"}\n"
        "  on: [alarm_raised, unhandeld]\n")
    result = run_cli("check-config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any("notify.targets[0].url: Apprise does not understand this URL" in line for line in lines), lines
    # A scheme Apprise has no plugin for is found here, with its line, not at the first alarm.
    assert any(":5: notify.targets[2].url: Apprise does not understand this URL" in line for line in lines), lines
    assert any("notify.targets[1].name: duplicate target name 'A'" in line for line in lines), lines
    assert any("notify.on[1]: 'unhandeld' is not a notification rule; did you mean `unhandled`?" in line
               for line in lines), lines
    assert "s3cret" not in result.stderr + result.stdout


async def test_the_account_api_masks_a_contacts_notification_url(make_config: Callable[..., Config]) -> None:
    config = make_config()
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("boss", "supervisor")
        token = await daemon.token("boss")
        contacts = [{"name": "Kim", "phone": "+15550123", "notify_url": "tgram://bot123456:token-s3cret/987"}]
        status, created = await daemon.api("POST", "/api/accounts", token, json={"name": "Shop", "contacts": contacts})
        assert status == 201 and created["contacts"][0]["notify_url"] == "********"
        # Sent back as shown, with the mask, the URL stays; the API never shows it.
        status, changed = await daemon.api("PATCH", f"/api/accounts/{created['id']}", token, json={
            "contacts": [{**created["contacts"][0], "phone": "+15550124"}]})
        assert status == 200 and changed["contacts"][0]["notify_url"] == "********"
        status, listed = await daemon.api("GET", "/api/accounts", token)
        assert "s3cret" not in str(listed)
        status, invalid = await daemon.api("PATCH", f"/api/accounts/{created['id']}", token, json={
            "contacts": [{"name": "Kim", "phone": "+15550123", "notify_url": "no-scheme"}]})
        assert status == 400 and "contacts[0].notify_url" in invalid["fields"]
        # Renamed and sent back with the mask: refused, not the keyholder silently dropped.
        status, renamed = await daemon.api("PATCH", f"/api/accounts/{created['id']}", token, json={
            "contacts": [{**created["contacts"][0], "name": "Kim Lee"}]})
        assert status == 400 and "renamed" in renamed["fields"]["contacts[0].notify_url"]

        def kept() -> str | None:
            from vmond.store.models import Contact
            return Contact.get(Contact.name == "Kim").notify_url
        assert await services.db.read(kept) == "tgram://bot123456:token-s3cret/987"

        # The account editor shows the mask; saved as shown (another field changed), the URL stays.
        async with browser_session() as http:
            csrf = await log_in(daemon, http, "boss")
            async with http.get(f"{daemon.url}/accounts/{created['id']}") as response:
                page = await response.text()
            assert "s3cret" not in page and Inputs(page).named("contacts-0-notify_url")["value"] == "********"
            form = {str(f["name"]): str(f.get("value") or "") for f in Inputs(page).fields
                    if str(f.get("name", "")).startswith("contacts-0-")}
            status, _, page = await post_form(http, daemon, f"/accounts/{created['id']}", {
                "csrf_token": csrf, "name": "Shop", **form, "contacts-0-role": "keyholder"})
            assert status == 200 and "s3cret" not in page
        assert await services.db.read(kept) == "tgram://bot123456:token-s3cret/987"
