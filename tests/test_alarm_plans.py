"""Closing an alarm properly: the mandatory resolution code, action plans and their steps, the audit trail as
sentences, and migration 9 bringing an existing database forward."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, Daemon, merge, write_config
from test_alarms import an_event

from vmond.config import Config, ConfigError, load_config
from vmond.daemon import running
from vmond.store import migrations
from vmond.store.actionplans import check_plan, plan_as_text, plan_from_text, steps_for
from vmond.store.db import open_sqlite
from vmond.store.sync import sync_accounts
from vmond.util.kinds import KINDS

PLAN = [
    {"text": "Look at the other cameras of the site"},
    {"text": "Call the police", "kinds": ["vehicle"]},  # not for the sample's intrusion (nor an event without kind)
    {"text": "Call the keyholder"},
]


def with_plan(plan: list[dict[str, object]]) -> dict[str, object]:
    account = merge(BASE_CONFIG["accounts"][0], {"action_plan": plan})
    return {"accounts": [account]}


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(**with_plan(PLAN))


async def test_resolving_needs_a_code_and_other_needs_a_text(daemon: Daemon, guard: str) -> None:
    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    path = f"/api/alarms/{alarm['id']}/resolve"
    for body in ({}, {"resolution": "a cat"}, {"code": "unclassified", "resolution": "a cat"}):
        status, answer = await daemon.api("POST", path, guard, json=body)
        assert status == 400 and answer["fields"] == {"code": "required"} and answer["error"], body
    status, answer = await daemon.api("POST", path, guard, json={"code": "other", "resolution": "  "})
    assert status == 400 and set(answer["fields"]) == {"text"}
    status, answer = await daemon.api("POST", path, guard, json={"code": "bogus"})
    assert status == 400 and "resolution code" in answer["fields"]["code"]
    _, detail = await daemon.api("GET", f"/api/alarms/{alarm['id']}", guard)
    assert detail["state"] == "acknowledged"  # nothing was resolved by the refused attempts
    status, answer = await daemon.api("POST", path, guard, json={"code": "other", "resolution": "Wind on the gate"})
    assert status == 200 and answer["resolution"] == {"code": "other", "label": "Other (see text)",
                                                      "text": "Wind on the gate"}


async def test_the_code_may_be_left_optional(make_config: Callable[..., Config]) -> None:
    assert make_config().alarms.require_resolution_code is True  # the default
    config = make_config(alarms={"require_resolution_code": False})
    assert config.alarms.require_resolution_code is False
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        guard = await daemon.token("guard1")
        _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
        status, answer = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard, json={})
        assert status == 200 and answer["resolution"]["code"] == "unclassified"


async def test_steps_are_copied_ticked_live_and_on_the_trail(daemon: Daemon, guard: str, tmp_path: Path) -> None:
    status, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    assert status == 201
    assert alarm["steps"] == [
        {"n": 1, "text": "Look at the other cameras of the site", "done_by": None, "done_at": None},
        {"n": 2, "text": "Call the keyholder", "done_by": None, "done_at": None},
    ]
    path = f"/api/alarms/{alarm['id']}"
    with daemon.services.bus.subscribe() as live:
        status, ticked = await daemon.api("POST", f"{path}/steps/2", guard)
        assert status == 200
        message = live._queue.get_nowait()
        assert message.type == "alarm.updated" and message.data["steps"][1]["done_by"]["username"] == "guard1"
    step = ticked["steps"][1]
    assert step["done_by"]["username"] == "guard1" and step["done_at"] and ticked["steps"][0]["done_by"] is None
    status, again = await daemon.api("POST", f"{path}/steps/2", guard)  # twice is once
    assert status == 200 and again["steps"] == ticked["steps"]
    assert (await daemon.api("POST", f"{path}/steps/3", guard))[0] == 404
    assert (await daemon.api("POST", f"{path}/steps/x", guard))[0] == 404
    assert (await daemon.api("POST", "/api/alarms/999/steps/1", guard))[0] == 404

    # The file's plan changes (a restart syncs it): the alarm's steps stay as they were.
    (tmp_path / "later").mkdir()
    changed = load_config(write_config(tmp_path / "later", **with_plan([{"text": "Something else"}])))
    await daemon.services.db.write(sync_accounts, changed.accounts)
    _, detail = await daemon.api("GET", path, guard)
    assert [s["text"] for s in detail["steps"]] == ["Look at the other cameras of the site", "Call the keyholder"]
    status, accounts = await daemon.api("GET", "/api/accounts", await supervisor(daemon))
    assert accounts["accounts"][0]["action_plan"] == [{"text": "Something else", "kinds": []}]

    assert (await daemon.api("POST", f"{path}/resolve", guard, json={"code": "test"}))[0] == 200
    assert (await daemon.api("POST", f"{path}/steps/1", guard))[0] == 409
    _, detail = await daemon.api("GET", path, guard)
    steps = [entry for entry in detail["audit"] if entry["action"] == "alarm.step"]
    assert [(s["detail"], s["text"]) for s in steps] == [
        ({"n": 2, "text": "Call the keyholder"}, "guard1 ticked step 2: Call the keyholder")]


async def supervisor(daemon: Daemon) -> str:
    await daemon.add_user("boss", "supervisor")
    return await daemon.token("boss")


async def test_the_audit_trail_reads_as_sentences(daemon: Daemon, guard: str) -> None:
    await daemon.add_user("guard2", "guard")
    other = await daemon.token("guard2")
    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    path = f"/api/alarms/{alarm['id']}"
    await daemon.api("POST", f"{path}/notes", guard, json={"text": "Called Jane, no answer"})
    await daemon.api("POST", f"{path}/acknowledge", other)
    await daemon.api("POST", f"{path}/resolve", other, json={"code": "false_alarm", "resolution": "a cat"})
    _, detail = await daemon.api("GET", path, guard)
    assert [entry["text"] for entry in detail["audit"]] == [
        "guard1 turned the event into an alarm",
        "guard1 raised the alarm",
        "guard1 is handling it",
        "guard1 added a note: Called Jane, no answer",
        "guard2 took it over from guard1",
        "guard2 resolved it as False alarm: a cat",
    ]
    # The entries keep what programs read.
    assert [entry["action"] for entry in detail["audit"]][-2:] == ["alarm.acknowledge", "alarm.resolve"]


async def test_the_action_plan_over_the_account_api(daemon: Daemon) -> None:
    boss = await supervisor(daemon)
    plan = [{"text": "Call the guard dog unit", "kinds": ["person", "intrusion"]}, {"text": "Log it"}]
    status, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot", "action_plan": plan})
    assert status == 201 and account["action_plan"] == [plan[0], {"text": "Log it", "kinds": []}]
    status, answer = await daemon.api("PATCH", f"/api/accounts/{account['id']}", boss,
                                      json={"action_plan": [{"text": ""}, {"text": "ok", "kinds": ["Not a kind!"]}]})
    assert status == 400 and set(answer["fields"]) == {"action_plan[0].text", "action_plan[1].kinds"}
    status, answer = await daemon.api("PATCH", f"/api/accounts/{account['id']}", boss, json={"action_plan": []})
    assert status == 200 and answer["action_plan"] == []


def test_which_steps_apply_to_which_kind() -> None:
    plan = [{"text": "Look", "kinds": []}, {"text": "Police", "kinds": ["person", "intrusion"]},
            {"text": "Call the installer", "kinds": ["tamper"]}]
    assert [s["text"] for s in steps_for(plan, "person")] == ["Look", "Police"]
    assert [s["text"] for s in steps_for(plan, "motion")] == ["Look"]
    assert [s["text"] for s in steps_for(plan, None)] == ["Look"]  # an event from before kinds existed
    assert [s["n"] for s in steps_for(plan, "tamper")] == [1, 2]
    assert steps_for(None, "person") == []
    text = plan_as_text(plan)
    assert text == "Look\nPolice | person, intrusion\nCall the installer | tamper"
    errors: dict[str, str] = {}
    assert check_plan(plan_from_text(text + "\n\n"), errors) == plan and errors == {}
    # Only the kinds events have (vmond.util.kinds): a step for "smoke" would never apply.
    assert check_plan([{"text": "Fire brigade", "kinds": ["smoke"]}], errors) == []
    assert errors == {"action_plan[0].kinds": "a list of event kinds: " + ", ".join(KINDS)}


def test_the_plan_in_the_configuration_file(make_config: Callable[..., Config]) -> None:
    config = make_config(**with_plan([{"text": "Call", "kinds": ["Person", "intrusion"]}, {"text": "Look"}]))
    steps = config.accounts[0].action_plan
    assert [(s.text, s.kinds) for s in steps] == [("Call", ("person", "intrusion")), ("Look", ())]
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.action_plan\[0\]\.kinds\[0\]"):
        make_config(**with_plan([{"text": "Call", "kinds": ["no such kind!"]}]))
    with pytest.raises(ConfigError, match=r"'persn' is not an event kind; did you mean `person`\?"):
        make_config(**with_plan([{"text": "Call", "kinds": ["persn"]}]))


def test_migration_9_brings_an_existing_database_forward(tmp_path: Path) -> None:
    # The database as the migration before the one that adds the steps left it (its number may move in a merge).
    before = next(version for version in range(migrations.LATEST) if _adds_steps(version))
    path = tmp_path / "vmond.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(before):
        conn.execute("BEGIN")
        migrations.MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {version + 1}")
        conn.execute("COMMIT")
    conn.executescript("""
        INSERT INTO user (id, username, password_hash, role, active, created_at)
            VALUES (1, 'old', 'x', 'guard', 1, '2025-01-01T00:00:00.000000Z');
        INSERT INTO account (id, name, address, notes, armed, from_config, created_at, updated_at)
            VALUES (1, 'Old Customer', '', '', 1, 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z');
        INSERT INTO camera (id, account_id, name, smtp_local_part, active, from_config, created_at)
            VALUES (1, 1, 'Gate', 'camera-gate', 1, 0, '2025-01-01T00:00:00.000000Z');
        INSERT INTO alarm_event (id, camera_id, received_at, updated_at, event_time, event_type, subject,
                                 body_excerpt, status, is_test, flags, mail_count, video_state)
            VALUES (1, 1, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                    '2025-01-01T00:00:00.000000Z', 'Motion', '', '', 'alarmed', 0, '[]', 1, 'none');
        INSERT INTO alarm (id, event_id, opened_by_id, opened_at, state)
            VALUES (1, 1, 1, '2025-01-01T00:00:01.000000Z', 'open');
    """)
    conn.close()
    db = open_sqlite(path)
    try:
        migrated = db.connection()
        assert migrations.schema_version(migrated) == migrations.LATEST
        assert migrated.execute("SELECT name, action_plan FROM account").fetchall() == [("Old Customer", "[]")]
        assert migrated.execute("SELECT steps, state FROM alarm").fetchall() == [("[]", "open")]
    finally:
        db.close()
    assert (tmp_path / f"vmond.db.v{before}.bak").is_file()


def _adds_steps(version: int) -> bool:
    """Whether migration number *version* + 1 is the one that adds the alarm's steps."""
    probe = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for step in migrations.MIGRATIONS[:version + 1]:
            step(probe)
        return "steps" in {row[1] for row in probe.execute('PRAGMA table_info("alarm")')}
    finally:
        probe.close()


async def test_steps_and_the_missing_outcome_without_javascript(daemon: Daemon, guard: str) -> None:
    from test_web import browser_session, csrf_of, log_in

    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    alarm_url = f"{daemon.url}/alarms/{alarm['id']}"
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        token = await csrf_of(http, alarm_url)
        async with http.post(f"{alarm_url}/steps/1", data={"csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path == f"/alarms/{alarm['id']}"
            assert 'data-step-done="1">guard1' in await response.text()
        async with http.post(f"{alarm_url}/resolve", data={"code": "", "resolution": "Nobody there",
                                                           "csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            page = await response.text()
            assert response.status == 400 and 'data-error="code"' in page and "Nobody there</textarea>" in page
            assert 'data-action="resolve"' in page  # the form again, not a bare error page


async def test_the_plan_in_the_account_editor(daemon: Daemon) -> None:
    from test_admin_forms import post_form
    from test_web import browser_session, log_in

    boss = await supervisor(daemon)
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "boss")
        form = {"csrf_token": csrf, "name": "Corner Shop", "action_plan": "Look\n\nCall the police | person, intrusion"}
        status, path, page = await post_form(http, daemon, "/accounts/new", form)
        assert status == 200 and re.fullmatch(r"/accounts/\d+", path)
        assert "Look\nCall the police | person, intrusion</textarea>" in page
        _, account = await daemon.api("GET", f"/api/{path.strip('/')}", boss)
        assert account["action_plan"] == [{"text": "Look", "kinds": []},
                                          {"text": "Call the police", "kinds": ["person", "intrusion"]}]
        status, _, page = await post_form(http, daemon, path, {**form, "action_plan": "Look\n| person"})
        assert status == 400 and "Step 2: required" in page and "Look\n| person</textarea>" in page
        # An account declared in the file keeps the file's plan: the editor cannot change it.
        status, _, page = await post_form(http, daemon, "/accounts/1", {**form, "name": "Test Customer"})
        assert status == 409


async def test_the_text_of_a_resolution_may_be_sent_as_text(daemon: Daemon, guard: str) -> None:
    """The 400 for a missing text names it ``text``, as a resolve command does: a client that follows it is heard."""
    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    path = f"/api/alarms/{alarm['id']}/resolve"
    status, answer = await daemon.api("POST", path, guard, json={"code": "other", "text": "Fox at the fence"})
    assert status == 200 and answer["resolution"]["text"] == "Fox at the fence"
