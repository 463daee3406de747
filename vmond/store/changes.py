"""The one seam every state change goes through: record it, then announce it, then wake whoever sends the outbox.

A change is a store function run by :meth:`Changes.record` in one write transaction on the writer thread. It gets a
:class:`Change` as its ``change`` argument: through it the function queues its MQTT outbox rows (in that same
transaction, worded by :mod:`vmond.store.messages`) and names the live messages the change means for the
dashboards. So what a change announces is written next to the change, and callers never publish anything.

Only after the commit does the seam publish those messages on the bus, in the order the function named them, and
then, if it queued outbox rows, wake the senders that registered with :meth:`Changes.on_queued` (the MQTT
forwarder). A transaction that rolls back announces nothing and wakes nobody.

Notifications (issue 17): with :class:`NotifyRules`, ``queue_alarm("new")`` and ``queue_event("new")`` of a
supervision event also write the notification rows the rules ask for (see :mod:`vmond.store.notifications`), in
the same transaction and whether or not MQTT is on; after the commit the seam wakes the notification sender
(registered with :meth:`Changes.on_notified`).

Several central nodes (issue 19): whoever registered with :meth:`Changes.on_announced` is handed each change once
the seam has published and woken locally, to tell the other nodes (:mod:`vmond.central.crossnode`); what another
node announced comes back through :meth:`Changes.publish_remote` and :meth:`Changes.wake`, never through the hook
again.

Store functions stay callable without a seam (``change`` defaults to None): then nothing is queued or announced.
Runs on the event loop; the :class:`Change` is made and filled on the writer thread, in the attempt that commits
(on PostgreSQL a write may be attempted more than once), and read only after the commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from vmond.store import mediaout, notifications, outbox
from vmond.store.messages import Topics, alarm_payload, event_payload
from vmond.store.notifications import NotifyRules

if TYPE_CHECKING:
    from vmond.store.db import Database
    from vmond.util.bus import Bus

T = TypeVar("T")


class Announcement(NamedTuple):
    type: str  # the bus message type, e.g. "event.created"
    data: dict[str, Any]
    about: tuple[str, int] | None  # the object it shows, e.g. ("alarm", 7)


class Change:
    """What one change tells the world, collected inside its transaction: outbox rows queued there and then,
    live messages kept for after the commit."""

    def __init__(self, topics: Topics | None = None, notify: NotifyRules | None = None) -> None:
        self.topics = topics  # None: MQTT is off, nothing is queued
        self.notify = notify  # None: nobody is notified
        self.announcements: list[Announcement] = []
        self.queued = 0  # outbox rows written
        self.notified = 0  # notification rows written
        self.remote: str | None = None  # a central station's operator making it: "<user> at <central>" (issue 18)

    def announce(self, type_: str, data: dict[str, Any], about: tuple[str, int] | None = None) -> None:
        """Publish *data* as *type_* on the bus once the change is committed.

        An object announced again in the same change (or batch) goes out once, in its first place and under its
        first type, with its newest state: a guard who raises an alarm and takes it at once makes one
        ``alarm.created`` showing who took it."""
        if about is not None:
            for index, earlier in enumerate(self.announcements):
                if earlier.about == about:
                    self.announcements[index] = earlier._replace(data=data)
                    return
        self.announcements.append(Announcement(type_, data, about))

    def queue_event(self, kind: str, event: dict[str, Any]) -> None:
        """Queue an ``events`` message for the central station (a camera's test mail stays local); a new
        supervision event also queues its notifications."""
        if self.topics is not None and not event["is_test"]:
            topics = self.topics
            outbox.enqueue(topics.events, event_payload(topics.site, kind, event, topics.public_url),
                           event_id=event["id"])
            self.queued += 1
            if kind == "new" and topics.publish_media != "none":
                mediaout.queue_eager(self, event)  # after the event's message, which describes the media
        if self.notify is not None and kind == "new":
            self.notified += notifications.queue_for_event(self.notify, event)

    def queue_alarm(self, kind: str, alarm: dict[str, Any]) -> None:
        """Queue an ``alarms`` message for the central station; a new alarm also queues its notifications."""
        if self.topics is not None:
            outbox.enqueue(self.topics.alarms, alarm_payload(self.topics.site, kind, alarm),
                           event_id=alarm["event_id"])
            self.queued += 1
        if self.notify is not None and kind == "new":
            self.notified += notifications.queue_for_alarm(self.notify, alarm)

    def merge(self, later: Change) -> None:
        """Take over what a later committed change of the same batch collected."""
        for item in later.announcements:
            self.announce(*item)
        self.queued += later.queued
        self.notified += later.notified


class Changes:
    """Records changes: ``await changes.record(store_function, *args)``; see the module's docstring."""

    def __init__(self, db: Database, bus: Bus, topics: Topics | None, notify: NotifyRules | None = None) -> None:
        self._db = db
        self._bus = bus
        self._topics = topics
        self._notify = notify
        self._senders: list[Callable[[], None]] = []
        self._notifiers: list[Callable[[], None]] = []
        self._listeners: list[Callable[[Change], None]] = []

    def on_queued(self, wake: Callable[[], None]) -> None:
        """Call *wake* (on the loop, never blocking) after each change that queued outbox rows."""
        self._senders.append(wake)

    def on_notified(self, wake: Callable[[], None]) -> None:
        """Call *wake* (on the loop, never blocking) after each change that queued notification rows."""
        self._notifiers.append(wake)

    def on_announced(self, listener: Callable[[Change], None]) -> None:
        """Call *listener* (on the loop, never blocking) with each committed change that announced something or
        queued rows, after the seam published it and woke the local senders."""
        self._listeners.append(listener)

    def wake(self, *, queued: bool = False, notified: bool = False) -> None:
        """Wake the outbox senders (*queued*) and the notification senders (*notified*), as a change that queued
        such rows does; also for rows another central node queued."""
        if queued:
            for wake in self._senders:
                wake()
        if notified:
            for wake in self._notifiers:
                wake()

    def publish_remote(self, type_: str, data: dict[str, Any]) -> None:
        """Publish on this node's bus what another node announced (not handed to :meth:`on_announced` again)."""
        self._bus.publish(type_, data)

    async def record(self, fn: Callable[..., T], /, *args: Any, after_commit: Callable[[], None] | None = None,
                     **kwargs: Any) -> T:
        """Run ``fn(*args, change=..., **kwargs)`` in one write transaction, then announce what it collected.

        *after_commit* runs right after the commit, before anything is announced (the pipeline's crash point).
        An exception from *fn* rolls its transaction back and propagates; nothing is announced."""
        result, change = await self._write(fn, args, kwargs)
        if after_commit is not None:
            after_commit()
        self._announce(change)
        return result

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Several changes (each its own transaction) announced together when the block ends: what each
        committed goes out then, also when a later one failed."""
        batch = Batch(self, Change(self._topics, self._notify))
        try:
            yield batch
        finally:
            self._announce(batch.collected)

    async def _write(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[T, Change]:
        def attempt() -> tuple[T, Change]:
            # A fresh Change for each attempt: on PostgreSQL a write may run again after a serialization failure,
            # and only what the committed attempt collected may be announced.
            change = Change(self._topics, self._notify)
            return fn(*args, change=change, **kwargs), change

        return await self._db.write(attempt)

    def _announce(self, change: Change) -> None:
        for item in change.announcements:
            self._bus.publish(item.type, item.data)
        self.wake(queued=bool(change.queued), notified=bool(change.notified))
        if change.announcements or change.queued or change.notified:
            for listener in self._listeners:
                listener(change)


class Batch:
    """Changes recorded in :meth:`Changes.batch`; each :meth:`record` commits on its own."""

    def __init__(self, changes: Changes, collected: Change) -> None:
        self._changes = changes
        self.collected = collected

    async def record(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Like :meth:`Changes.record`, but announced when the batch ends."""
        result, change = await self._changes._write(fn, args, kwargs)
        self.collected.merge(change)  # only once committed: a rolled-back change announces nothing
        return result
