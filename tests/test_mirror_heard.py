"""A site's sign of life (``last_message_at``) from the mirror's batches: moved once per batch and only when it
moved by more than a second, and on PostgreSQL (several central nodes) written after the batch's transaction, so
that two nodes' batches from the same site neither wait for each other nor run again."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee as pw
import pytest

from vmond.store.db import Counts, open_postgresql, run_transaction
from vmond.store.mirrorbatch import SiteMessage, mirror_messages
from vmond.store.models import AlarmEvent, Site
from vmond.store.sites import note_heard

AT = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
DOMAIN = "central.local"
WAIT = 10.0  # seconds a transaction may take here: far more than it needs, far less than a lock wait's hang


@pytest.fixture
def db(store_db: pw.Database) -> pw.Database:
    """SQLite, then PostgreSQL (a central's two engines)."""
    return store_db


def event(remote: int, camera: int = 7) -> dict[str, Any]:
    return {"event": {"id": remote, "camera": {"id": camera, "name": "Door"}, "account": {"id": 3, "name": "Shop"},
                      "received_at": AT.isoformat(), "updated_at": AT.isoformat(), "subject": f"Alarm {remote}",
                      "status": "active", "kind": "intrusion", "images": [{"id": 1000 + remote}]}}


def heard_at(key: str) -> datetime | None:
    return Site.get(Site.key == key).last_message_at


def test_events_keep_a_site_alive_once_per_batch(db: pw.Database) -> None:
    assert mirror_messages([SiteMessage("site-a", "events", event(n)) for n in (1, 2, 3)], AT, DOMAIN, {}) == 0
    assert heard_at("site-a") == AT and AlarmEvent.select().count() == 3
    # Within a second of the last one written: left as it is (no write); later: moved.
    assert note_heard({"site-a": AT + timedelta(seconds=0.9)}) == 0
    assert heard_at("site-a") == AT
    assert note_heard({"site-a": AT + timedelta(seconds=2)}) == 1
    assert heard_at("site-a") == AT + timedelta(seconds=2)
    # Never backwards (another node, or a batch that took longer, wrote a later time first).
    assert note_heard({"site-a": AT}) == 0
    assert heard_at("site-a") == AT + timedelta(seconds=2)
    assert note_heard({"unknown-site": AT}) == 0  # a site whose message was dropped has no row to move


def test_a_batch_can_leave_the_sign_of_life_to_its_caller(db: pw.Database) -> None:
    heard = {"stale": AT}  # emptied first: an attempt run again does not keep the last one's
    messages = [SiteMessage("site-a", "events", event(1)), SiteMessage("site-b", "events", {"event": "bad"}),
                SiteMessage("site-c", "events", event(2), retained=True)]
    assert mirror_messages(messages, AT, DOMAIN, {}, heard=heard) == 1
    assert heard == {"site-a": AT}  # not the dropped message's site, not a retained copy's
    assert heard_at("site-a") is None  # not written in the batch's transaction
    assert note_heard(heard) == 1 and heard_at("site-a") == AT


def test_two_nodes_batches_from_one_site_neither_wait_nor_run_again(postgres_url: str) -> None:
    """Node A's batch is still open when node B mirrors a batch from the same site and commits: B must not wait
    for A (a site row locked by A's batch made B wait until A's commit and then fail), and A commits at once."""
    database = open_postgresql(postgres_url)
    mirror_messages([SiteMessage("site-a", "events", event(1))], AT, DOMAIN, {})  # the site, its camera
    a_open, b_done = threading.Event(), threading.Event()
    counts = {"a": Counts(), "b": Counts()}
    failures: list[BaseException] = []

    def node(name: str, remote: int) -> None:
        def batch() -> None:
            heard: dict[str, datetime] = {}
            mirror_messages([SiteMessage("site-a", "events", event(remote + n)) for n in range(5)],
                            AT + timedelta(seconds=remote), DOMAIN, {}, heard=heard)
            if name == "a":
                a_open.set()
                assert b_done.wait(WAIT), "node B's batch waited for node A's"
        try:
            run_transaction(database, batch, counts=counts[name])
            if name == "b":
                b_done.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failures.append(exc)
            a_open.set()
        finally:
            database.close()

    first = threading.Thread(target=node, args=("a", 100))
    first.start()
    assert a_open.wait(WAIT)
    second = threading.Thread(target=node, args=("b", 200))
    second.start()
    second.join(WAIT)
    first.join(WAIT)
    assert not first.is_alive() and not second.is_alive()
    assert failures == []
    assert (counts["a"].retries, counts["b"].retries) == (0, 0)
    assert AlarmEvent.select().count() == 11
    database.close()


def test_noting_sites_heard_does_not_wait_for_another_nodes_open_batch(postgres_url: str) -> None:
    """Node A's batch is open (its events' foreign keys hold their site rows FOR KEY SHARE) when node B notes the
    same sites heard: B must not wait for A's commit (a FOR UPDATE did, and deadlocked with A's next insert)."""
    database = open_postgresql(postgres_url)
    mirror_messages([SiteMessage(site, "events", event(n)) for n, site in ((1, "site-a"), (2, "site-b"))], AT,
                    DOMAIN, {})
    a_open, b_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def node_a() -> None:
        def batch() -> None:
            mirror_messages([SiteMessage(site, "events", event(n)) for n, site in ((3, "site-a"), (4, "site-b"))],
                            AT, DOMAIN, {}, heard={})
            a_open.set()
            assert b_done.wait(WAIT), "noting the sites heard waited for node A's batch"
        try:
            run_transaction(database, batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failures.append(exc)
            a_open.set()
        finally:
            database.close()

    first = threading.Thread(target=node_a)
    first.start()
    assert a_open.wait(WAIT)
    written: list[int] = []
    second = threading.Thread(target=lambda: (written.append(run_transaction(
        database, lambda: note_heard({"site-a": AT + timedelta(seconds=5), "site-b": AT + timedelta(seconds=5)}))),
        b_done.set(), database.close()))
    second.start()
    second.join(WAIT)
    first.join(WAIT)
    assert not first.is_alive() and not second.is_alive()
    assert failures == [] and written == [2]
    assert heard_at("site-a") == heard_at("site-b") == AT + timedelta(seconds=5)
    database.close()
