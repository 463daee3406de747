"""The supervision watcher: one background task that raises and closes supervision events through the seam.

Cameras: :func:`vmond.store.supervision.check_silence` runs when the next camera may fall silent (the store says
when, from the stored last mails), when :meth:`Supervisor.nudge` says cameras changed, and at least every
:data:`SILENCE_RECHECK` seconds; between those nothing is read. A mail only moves a camera's moment later, so
sleeping until the earliest one never misses a silence, and a 3-second ``max_silence`` is seen within a fraction
of a second.

The appliance: every *interval* seconds the probes the daemon wired in are asked (each cheap, none blocking the
loop: free space is read on an I/O thread) and a condition is written only when it appears or ends:

- ``disk_low``: free space under ``storage.min_free_space`` (the SMTP door answers 452 then);
- ``mqtt_down``: the broker unreachable for ``supervision.mqtt_down_after``;
- ``clips_failing``: :data:`CLIPS_FAILING_AFTER` clips failed in a row (a made clip ends it);
- ``spool_stuck``: a spooled mail waiting longer than :data:`SPOOL_STUCK_AFTER` to become an event.

A condition whose probe is absent (MQTT turned off since) is closed at start. Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from vmond.config.types import format_duration, format_size
from vmond.store.supervision import check_silence, open_conditions, set_condition, silence_due
from vmond.util.clock import utcnow
from vmond.util.tasks import BackgroundService

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.store.changes import Changes
    from vmond.store.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_INTERVAL = 10.0  # seconds between looks at the appliance's own health
SILENCE_RECHECK = 60.0  # seconds: the cameras are read at least this often (new cameras, changed limits)
MIN_WAIT = 0.1  # never spin: a moment already past is looked at again after this
CLIPS_FAILING_AFTER = 3  # clips failed in a row
SPOOL_STUCK_AFTER = 300.0  # seconds the oldest spooled mail may wait


@dataclass(frozen=True)
class Probes:
    """What the watcher asks about the appliance; None: not watched (e.g. ``mqtt_connected`` with MQTT off)."""

    free_space: Callable[[], int] | None = None  # bytes free where the data live; blocking (run on an I/O thread)
    mqtt_connected: Callable[[], bool] | None = None
    clip_failures_in_a_row: Callable[[], int] | None = None
    spool_oldest_age: Callable[[], float | None] | None = None  # seconds; None: empty; blocking


@dataclass(frozen=True)
class Condition:
    present: bool
    text: str  # why it is raised, or why it ended


class Supervisor(BackgroundService):
    task_name = "supervision"

    def __init__(self, config: Config, db: Database, changes: Changes, probes: Probes, io: Executor, *,
                 interval: float | None = None, clips_failing_after: int = CLIPS_FAILING_AFTER,
                 spool_stuck_after: float = SPOOL_STUCK_AFTER) -> None:
        self._config = config
        self._db = db
        self._changes = changes
        self._probes = probes
        self._io = io
        self._interval = PROBE_INTERVAL if interval is None else interval
        self._clips_failing_after = clips_failing_after
        self._spool_stuck_after = spool_stuck_after
        self._wake = asyncio.Event()
        self._open: set[str] = set()  # appliance conditions present, as last written
        self._mqtt_down_since: float | None = None  # monotonic

    def nudge(self) -> None:
        """Cameras or their limits changed: look at their silence now."""
        self._wake.set()

    async def _run(self) -> None:
        self._open = {subject for subject in await self._db.read(open_conditions) if ":" not in subject}
        next_silence = next_probe = 0.0
        while True:
            now = time.monotonic()
            if now >= next_silence or self._wake.is_set():
                self._wake.clear()
                wait = await self._guarded(self._check_silence)
                next_silence = now + (self._interval if wait is None else wait)
            if now >= next_probe:
                await self._guarded(self._check_appliance)
                next_probe = now + self._interval
            timeout = max(MIN_WAIT, min(next_silence, next_probe) - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _guarded(self, check: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await check()
        except asyncio.CancelledError:
            raise
        except Exception:  # the database full or locked, a probe failing: try again at the next round
            log.exception("supervision: a check failed; trying again shortly")
            return None

    async def _check_silence(self) -> float:
        """Returns the seconds until a camera may next fall silent (at most :data:`SILENCE_RECHECK`)."""
        default = self._config.supervision.max_silence
        due, next_due = await self._db.read(silence_due, default, zone=self._config.site.timezone)
        if due:
            changed = await self._changes.record(check_silence, self._config.smtp.domain, default,
                                                 self._config.events.priorities, zone=self._config.site.timezone)
            for event in changed:
                log.warning("supervision: %s %s (event %d)", event["event_type"].lower(),
                            "closed" if event["status"] != "active" else "raised", event["id"])
            due, next_due = await self._db.read(silence_due, default, zone=self._config.site.timezone)
        if next_due is None:
            return SILENCE_RECHECK
        return min(SILENCE_RECHECK, max(0.0, (next_due - utcnow()).total_seconds()))

    async def _check_appliance(self) -> None:
        conditions: dict[str, tuple[str, Condition | None]] = {
            "disk_low": ("Disk space low", await self._disk()),
            "mqtt_down": ("MQTT broker unreachable", self._mqtt()),
            "clips_failing": ("Clips failing", self._clips()),
            "spool_stuck": ("Spool not draining", await self._spool()),
        }
        for kind, (title, condition) in conditions.items():
            if condition is None:  # not watched (any more)
                if kind not in self._open:
                    continue
                condition = Condition(False, "no longer supervised")
            if condition.present == (kind in self._open):
                continue
            await self._changes.record(set_condition, self._config.smtp.domain, kind, condition.present, title,
                                       condition.text, self._config.events.priorities)
            (self._open.add if condition.present else self._open.discard)(kind)
            if condition.present:
                log.warning("supervision: %s: %s", title.lower(), condition.text)
            else:
                log.info("supervision: %s closed: %s", kind, condition.text)

    async def _disk(self) -> Condition | None:
        floor = self._config.storage.min_free_space
        if self._probes.free_space is None or not floor:
            return None
        free = await asyncio.get_running_loop().run_in_executor(self._io, self._probes.free_space)
        if free < floor:
            return Condition(True, f"{format_size(free)} free, below storage.min_free_space ({format_size(floor)}); "
                                   "cameras are told to retry later")
        return Condition(False, f"the disk has room again ({format_size(free)} free)")

    def _mqtt(self) -> Condition | None:
        if self._probes.mqtt_connected is None:
            return None
        if self._probes.mqtt_connected():
            self._mqtt_down_since = None
            return Condition(False, "the broker is reachable again")
        now = time.monotonic()
        if self._mqtt_down_since is None:
            self._mqtt_down_since = now
        after = self._config.supervision.mqtt_down_after
        down = now - self._mqtt_down_since
        if down < after:
            return Condition("mqtt_down" in self._open, "the broker is reachable again")
        host = f"{self._config.mqtt.host}:{self._config.mqtt.port}"
        return Condition(True, f"no connection to the MQTT broker {host} for {format_duration(round(down))}; "
                               "messages wait in the outbox")

    def _clips(self) -> Condition | None:
        if self._probes.clip_failures_in_a_row is None:
            return None
        failures = self._probes.clip_failures_in_a_row()
        if failures >= self._clips_failing_after:
            return Condition(True, f"the last {failures} clips could not be made")
        return Condition(False, "a clip was made again")

    async def _spool(self) -> Condition | None:
        if self._probes.spool_oldest_age is None:
            return None
        age = await asyncio.get_running_loop().run_in_executor(self._io, self._probes.spool_oldest_age)
        if age is not None and age >= self._spool_stuck_after:
            return Condition(True, f"a received mail has waited {format_duration(round(age))} to become an event")
        return Condition(False, "the spool drains again")
