"""The outbox on PostgreSQL: a central's nodes queue commands at once, and ids still follow the commits.

The sender reads on from the last id it handed over; if a row with a smaller id could commit after a larger one,
it would be left behind for good. The first writer holds an advisory lock from its insert to its commit, so the
second waits for it."""

from __future__ import annotations

import threading
import time

from postgres import PostgresCluster

from vmond.store import outbox
from vmond.store.db import open_postgresql


def test_a_later_writer_waits_for_the_earlier_commit(postgres: PostgresCluster, postgres_db: str,
                                                     postgres_url: str) -> None:
    db = open_postgresql(postgres_url)
    first_inserted, first_may_commit, ids = threading.Event(), threading.Event(), {}

    def first() -> None:
        with db.atomic():
            ids["first"] = outbox.enqueue("site/commands", b"first")
            first_inserted.set()
            first_may_commit.wait(30)
        db.close()

    def second() -> None:
        first_inserted.wait(30)
        with db.atomic():
            ids["second"] = outbox.enqueue("site/commands", b"second")
        db.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while not postgres.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                                   dbname=postgres_db)[0][0]:
            assert time.monotonic() < deadline, "the second writer did not wait for the first one's commit"
            assert "second" not in ids, "the second writer committed while the first was open"
            time.sleep(0.02)
        with db.atomic():
            assert outbox.pending(0) == []  # neither has committed: the sender sees nothing to skip
    finally:
        first_may_commit.set()
        for thread in threads:
            thread.join(30)
    with db.atomic():
        rows = outbox.pending(0)
    assert [row["payload"] for row in rows] == [b"first", b"second"]
    assert ids["first"] < ids["second"]
