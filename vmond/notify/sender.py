"""The notification sender: due rows out through Apprise, off the event loop, with retries and backoff.

One background task. It wakes when the seam says a change queued notification rows (:meth:`NotificationSender.wake`),
when a retry falls due, and every ``check_interval`` for the ``unhandled`` check (events still untouched
``notify.escalate_after`` after receipt: their rows are written through the seam like any change).

Each due row is sent in a thread of the sender's own pool, at most ``concurrency`` at once, each with a deadline:
a target that hangs or fails holds one slot, never the others, the wall or the loop. The outcome goes through the
seam onto the event's (and so the alarm's) audit trail: sent; or failed, retried after ``backoff`` (10 s, 30 s,
1 min, 5 min, 15 min), given up after ``max_attempts``. Pending rows are bounded (``max_pending``: the oldest are
given up, on their trail). A row is marked sent only once Apprise returned: delivery is at least once, each message
carrying its row's stable ``Ref:``; a kill between the send and that commit sends it again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vmond.config import Config
from vmond.notify.deliver import DeliveryError, send
from vmond.store import notifications
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.store.notifications import NotifyRules
from vmond.util.clock import utcnow
from vmond.util.tasks import BackgroundService

log = logging.getLogger(__name__)

BACKOFF = (10.0, 30.0, 60.0, 300.0, 900.0)  # seconds before the 2nd, 3rd ... attempt
MAX_ATTEMPTS = 6
CONCURRENCY = 4
SEND_TIMEOUT = 30.0
MAX_PENDING = 1000
CHECK_INTERVAL = 5.0  # the unhandled check, and the longest sleep between looks at the table

Deliver = Callable[[str, str, str], None]


class NotificationSender(BackgroundService):
    """``async with NotificationSender(config, db, changes) as sender:`` sends until the block ends."""

    task_name = "notifications"

    def __init__(self, config: Config, db: Database, changes: Changes, *, deliver: Deliver = send,
                 backoff: tuple[float, ...] | None = None, max_attempts: int | None = None,
                 concurrency: int | None = None, send_timeout: float | None = None,
                 max_pending: int | None = None, check_interval: float | None = None) -> None:
        self._urls = {t.name: t.url for t in config.notify.targets}
        self._rules = NotifyRules.from_config(config)
        self._db, self._changes, self._deliver = db, changes, deliver
        # The module's constants, read now (tests shorten them).
        self._backoff, self._max_attempts = backoff or BACKOFF, max_attempts or MAX_ATTEMPTS
        concurrency = concurrency or CONCURRENCY
        self._concurrency, self._timeout = concurrency, send_timeout or SEND_TIMEOUT
        self._max_pending = max_pending or MAX_PENDING
        # The unhandled check runs often enough for a short escalate_after, and at most every CHECK_INTERVAL.
        self._check = check_interval or min(CHECK_INTERVAL, max(0.5, config.notify.escalate_after / 4))
        self._wake = asyncio.Event()
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notify")
        self._unhandled_after: int | None = None  # the last event the unhandled check looked at
        self.sent = self.failed = 0

    def wake(self) -> None:
        """A change queued notification rows: look now, not at the next check."""
        self._wake.set()

    async def __aexit__(self, *exc_info: object) -> None:
        await super().__aexit__(*exc_info)
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        # A send still inside Apprise ends by its own timeouts; its row stays pending and goes after a restart.
        self._threads.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {"targets": len(self._urls), "sending": len(self._sending), "sent": self.sent, "failed": self.failed}

    async def _run(self) -> None:
        next_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now >= next_check:
                next_check = now + self._check
                await self._guarded(self._check_unhandled)
            await self._guarded(self._start_due)
            self._wake.clear()
            delay = next_check - loop.time()
            if len(self._sending) < self._concurrency:  # all slots taken: a finished send wakes the loop
                upcoming = await self._db.read(notifications.next_due, list(self._sending))
                if upcoming is not None:
                    delay = min(delay, (upcoming - utcnow()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, delay))

    async def _guarded(self, step: Callable[[], Any]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # a database hiccup must not end notifications for good
            log.exception("notifications: %s failed; trying again shortly", getattr(step, "__name__", step))

    async def _check_unhandled(self) -> None:
        # Reads first: on a quiet appliance the periodic check writes nothing (an SD card is worn by writes).
        if "unhandled" in self._rules.on:
            due, self._unhandled_after = await self._db.read(notifications.unhandled_due, self._rules,
                                                             self._unhandled_after)
            if due:
                await self._changes.record(notifications.escalate_unhandled, self._rules, due)
        if await self._db.read(notifications.pending_count) <= self._max_pending:
            return
        given_up = await self._changes.record(notifications.give_up_beyond, self._max_pending)
        if given_up:
            self.failed += given_up
            log.warning("notifications: %d waiting too long were given up (more than %d pending)",
                        given_up, self._max_pending)

    async def _start_due(self) -> None:
        free = self._concurrency - len(self._sending)
        if free <= 0:
            return
        rows = await self._db.read(notifications.due, free, list(self._sending))
        for row in rows:
            self._sending[row["id"]] = asyncio.create_task(self._send(row), name=f"notify-{row['id']}")

    async def _send(self, row: dict[str, Any]) -> None:
        sending: asyncio.Future[None] | None = None
        try:
            url = row["url"] if row["url"] is not None else self._target_url(row["target"])
            if url is None:
                error: str | None = f"no notify.targets entry named {row['target']!r} any more"
            else:
                loop = asyncio.get_running_loop()
                sending = loop.run_in_executor(self._threads, self._deliver, url, row["title"], row["body"])
                error = await self._outcome(sending)
            await self._record(row, error)
        finally:
            if sending is not None and not sending.done():
                # A send past its deadline keeps its slot until Apprise lets go of the thread (its own timeouts):
                # no more threads than slots, so a hanging target never makes the others queue for a thread.
                await asyncio.wait([sending])
            self._sending.pop(row["id"], None)
            self._wake.set()  # a slot is free

    def _target_url(self, name: str) -> str | None:
        url = self._urls.get(name)
        return None if url is None else url.reveal()

    async def _outcome(self, sending: asyncio.Future[None]) -> str | None:
        """None when the message went out, else why not (never with the URL's secrets)."""
        try:
            await asyncio.wait_for(asyncio.shield(sending), timeout=self._timeout)
        except DeliveryError as exc:
            return str(exc) or "failed"
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:  # noqa: BLE001  # a plugin's own bug is one failed attempt, not a dead sender
            return f"{type(exc).__name__} inside Apprise"
        return None

    async def _record(self, row: dict[str, Any], error: str | None) -> None:
        if error is None:
            await self._changes.record(notifications.sent, row["id"])
            self.sent += 1
            log.info("notifications: %s sent to %s (%s)", row["uid"], row["target"], row["rule"])
            return
        attempt = row["attempts"] + 1
        retry_in = self._backoff[min(attempt, len(self._backoff)) - 1] if attempt < self._max_attempts else None
        await self._changes.record(notifications.failed, row["id"], error, retry_in)
        if retry_in is None:
            self.failed += 1
        log.warning("notifications: %s to %s failed (attempt %d): %s%s", row["uid"], row["target"], attempt, error,
                    "" if retry_in is None else f"; again in {retry_in:g} s")
