"""The notification sender: due rows out through Apprise, off the event loop, with retries and backoff.

One background task. It wakes when the seam says a change queued notification rows (:meth:`NotificationSender.wake`),
when a retry falls due, and every ``check_interval`` for the ``unhandled`` check (events still untouched
``notify.escalate_after`` after receipt: their rows are written through the seam like any change).

Each due row is sent in a daemon thread (:mod:`vmond.notify.threads`), at most ``concurrency`` at once and at most
one per target, each with a deadline: a target that hangs or fails delays only itself, never the other targets,
the wall or the loop. A send past its deadline counts as failed; its thread is left behind (no exit waits for it),
and its target gets no new send until that thread ends (at most ``MAX_STUCK`` such threads in all). The outcome
goes through the seam onto the event's (and so the alarm's) audit trail: sent; or failed, retried after ``backoff``
(10 s, 30 s, 1 min, 5 min, 15 min), given up after ``max_attempts``. An outcome that cannot be written (a full
disk) is kept in memory and written again with backoff; until then its row is not sent again by this process.
Pending rows are bounded (``max_pending``: the oldest are given up, on their trail). A row is marked sent only
once Apprise returned: delivery is at least once, each message carrying its row's stable ``Ref:``; a kill between
the send and that commit sends it again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from vmond.config import Config
from vmond.notify.deliver import DeliveryError, send
from vmond.notify.threads import MAX_STUCK, SendThreads
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
RECORD_BACKOFF = (1.0, 5.0, 15.0, 60.0)  # seconds before writing an outcome again after the write failed

Deliver = Callable[[str, str, str], None]


@dataclass
class _Outcome:
    """A send's outcome not yet written: *error* None is sent; *retry_in* None (on a failure) is giving up."""

    row: dict[str, Any]
    error: str | None
    retry_in: float | None
    writes: int = 0  # failed writes so far
    write_at: float = 0.0  # loop time of the next write
    writing: bool = False  # a write is under way (the send's own, or the loop's retry)


class NotificationSender(BackgroundService):
    """``async with NotificationSender(config, db, changes) as sender:`` sends until the block ends."""

    task_name = "notifications"

    def __init__(self, config: Config, db: Database, changes: Changes, *, deliver: Deliver = send,
                 backoff: tuple[float, ...] | None = None, max_attempts: int | None = None,
                 concurrency: int | None = None, send_timeout: float | None = None,
                 max_pending: int | None = None, check_interval: float | None = None,
                 max_stuck: int | None = None) -> None:
        self._urls = {t.name: t.url for t in config.notify.targets}
        self._rules = NotifyRules.from_config(config)
        self._db, self._changes, self._deliver = db, changes, deliver
        # The module's constants, read now (tests shorten them).
        self._backoff, self._max_attempts = backoff or BACKOFF, max_attempts or MAX_ATTEMPTS
        self._concurrency, self._timeout = concurrency or CONCURRENCY, send_timeout or SEND_TIMEOUT
        self._max_pending = max_pending or MAX_PENDING
        # The unhandled check runs often enough for a short escalate_after, and at most every CHECK_INTERVAL.
        self._check = check_interval or min(CHECK_INTERVAL, max(0.5, config.notify.escalate_after / 4))
        self._wake = asyncio.Event()
        self._sending: dict[int, asyncio.Task[None]] = {}  # row id -> its send, within its deadline
        self._unwritten: dict[int, _Outcome] = {}  # row id -> an outcome whose write failed: not sent again
        self._threads = SendThreads("notify", max_stuck or MAX_STUCK)
        self._unhandled_after: int | None = None  # the last event the unhandled check looked at
        self.sent = self.failed = 0

    def wake(self) -> None:
        """A change queued notification rows: look now, not at the next check."""
        self._wake.set()

    async def __aexit__(self, *exc_info: object) -> None:
        await super().__aexit__(*exc_info)
        for task in list(self._sending.values()):
            task.cancel()
        # Prompt: a send waits for its thread only up to its deadline, and a cancelled one not at all. A send still
        # inside Apprise is left to its daemon thread; its row stays pending and goes after a restart.
        await asyncio.gather(*self._sending.values(), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {"targets": len(self._urls), "sending": len(self._sending), "stuck": self._threads.stuck(),
                "sent": self.sent, "failed": self.failed}

    async def _run(self) -> None:
        next_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now >= next_check:
                next_check = now + self._check
                await self._guarded(self._check_unhandled)
            await self._guarded(self._write_outcomes)
            await self._guarded(self._start_due)
            self._wake.clear()
            delay = next_check - loop.time()
            if self._unwritten:
                delay = min([delay, *(o.write_at - loop.time() for o in self._unwritten.values() if not o.writing)])
            if len(self._sending) < self._concurrency and not self._threads.full():
                # (all slots taken, or too many stuck threads: a send or a thread that ends wakes the loop)
                with contextlib.suppress(Exception):  # a failed read is logged by the next _start_due
                    upcoming = await self._db.read(notifications.next_due, self._held(), sorted(self._threads.busy()))
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

    def _held(self) -> list[int]:
        """Rows not to take now: being sent, or sent (or failed) with the outcome not yet written."""
        return [*self._sending, *self._unwritten]

    async def _start_due(self) -> None:
        free = self._concurrency - len(self._sending)
        if free <= 0 or self._threads.full():
            return
        rows = await self._db.read(notifications.due, free, self._held(), sorted(self._threads.busy()))
        loop = asyncio.get_running_loop()
        for row in rows:
            url = row["url"] if row["url"] is not None else self._target_url(row["target"])
            answer: asyncio.Future[None] | None = None
            if url is not None and not self._threads.full():
                answer = loop.create_future()
                thread = self._threads.start(row["target"], self._deliver, url, row["title"], row["body"])
                thread.add_done_callback(functools.partial(self._ended, loop, answer))
            elif url is not None:
                break  # too many stuck threads: the rest wait for one to end
            self._sending[row["id"]] = asyncio.create_task(self._send(row, answer), name=f"notify-{row['id']}")

    def _ended(self, loop: asyncio.AbstractEventLoop, answer: asyncio.Future[None], done: Future[None]) -> None:
        """In the send's thread: hand its result to the loop, which looks for due rows again (the target is free)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: vmond stopped while this send hung
            loop.call_soon_threadsafe(self._settle, answer, done)

    def _settle(self, answer: asyncio.Future[None], done: Future[None]) -> None:
        if not answer.done():
            error = done.exception()
            if error is None:
                answer.set_result(None)
            else:
                answer.set_exception(error)
        self._wake.set()

    async def _send(self, row: dict[str, Any], answer: asyncio.Future[None] | None) -> None:
        try:
            if answer is None:
                error: str | None = f"no notify.targets entry named {row['target']!r} any more"
            else:
                error = await self._outcome(row["target"], answer)
            outcome = self._judge(row, error)
            self._unwritten[row["id"]] = outcome  # held from the due rows until written
        finally:
            self._sending.pop(row["id"], None)
            self._wake.set()  # a slot is free
        await self._write(outcome)

    def _target_url(self, name: str) -> str | None:
        url = self._urls.get(name)
        return None if url is None else url.reveal()

    async def _outcome(self, target: str, answer: asyncio.Future[None]) -> str | None:
        """None when the message went out, else why not (never with the URL's secrets)."""
        try:
            await asyncio.wait_for(answer, timeout=self._timeout)
        except DeliveryError as exc:
            return str(exc) or "failed"
        except TimeoutError:
            self._threads.overdue(target)
            log.warning("notifications: no answer from %s within %g s; it gets no new send until that one ends",
                        target, self._timeout)
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:  # noqa: BLE001  # a plugin's own bug is one failed attempt, not a dead sender
            return f"{type(exc).__name__} inside Apprise"
        return None

    def _judge(self, row: dict[str, Any], error: str | None) -> _Outcome:
        """Log the attempt; what to write: sent, retried after its backoff, or given up."""
        if error is None:
            self.sent += 1
            log.info("notifications: %s sent to %s (%s)", row["uid"], row["target"], row["rule"])
            return _Outcome(row, None, None)
        attempt = row["attempts"] + 1
        retry_in = self._backoff[min(attempt, len(self._backoff)) - 1] if attempt < self._max_attempts else None
        if retry_in is None:
            self.failed += 1
        log.warning("notifications: %s to %s failed (attempt %d): %s%s", row["uid"], row["target"], attempt, error,
                    "" if retry_in is None else f"; again in {retry_in:g} s")
        return _Outcome(row, error, retry_in)

    async def _write_outcomes(self) -> None:
        now = asyncio.get_running_loop().time()
        for outcome in [o for o in self._unwritten.values() if o.write_at <= now and not o.writing]:
            await self._write(outcome)

    async def _write(self, outcome: _Outcome) -> None:
        """Write *outcome* on the row and its trail; when that fails, keep it and try again later (the row is not
        sent again meanwhile, nor taken by another send)."""
        row_id = outcome.row["id"]
        if outcome.writing:
            return
        outcome.writing = True
        try:
            if outcome.error is None:
                await self._changes.record(notifications.sent, row_id)
            else:
                await self._changes.record(notifications.failed, row_id, outcome.error, outcome.retry_in)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # a full disk, a locked database: kept, written again later
            wait = RECORD_BACKOFF[min(outcome.writes, len(RECORD_BACKOFF) - 1)]
            outcome.writes += 1
            outcome.write_at = asyncio.get_running_loop().time() + wait
            log.error("notifications: could not record that %s to %s %s (%s: %s); trying again in %g s",
                      outcome.row["uid"], outcome.row["target"], "went out" if outcome.error is None else "failed",
                      type(exc).__name__, exc, wait)
            self._wake.set()  # the loop's sleep takes the new write time into account
        else:
            self._unwritten.pop(row_id, None)
        finally:
            outcome.writing = False
