"""The media quota holds while mail streams in: media are counted as they are written, crossing the quota wakes
the disk keeper at once, and writers wait for it, so the media directory never holds more than the quota plus
about one event's media. The count stays right across removals and restarts."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Daemon, distinct, media_counted, media_on_disk, sample
from helpers import wait_until

from vmond.config import Config
from vmond.daemon import running
from vmond.media import retention
from vmond.media import store as media_store
from vmond.media.retention import DiskKeeper
from vmond.media.store import MediaStore
from vmond.media.usage import MediaUsage
from vmond.store import events, outbox
from vmond.store.events import set_status
from vmond.store.models import AlarmEvent, Media, utcnow
from vmond.util import fsutil

MAIL = "hikvision-ipc-intrusion.eml"  # three pictures: an event with pictures, thumbnails and a clip
# The events that may not give up media (an open alarm, one awaiting MQTT delivery, the one being stored) must fit
# under 98% of it, or the keeper rightly says it is stuck: about 0.5 MB each with a quick (ultrafast) clip.
QUOTA = 2_000_000


def directory_size(root: Path) -> int:
    """What the media directory really holds, every file counted (temporary ones too)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass  # removed while we looked
    return total


class Sampler:
    """Measures the media directory over and over on a thread of its own, keeping the largest size seen."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.largest = max(self.largest, directory_size(self.root))
            self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


async def event_files(daemon: Daemon, event_id: int) -> int:
    """Bytes of an event's files on disk (pictures, thumbnails, clip)."""
    paths = await daemon.services.db.read(
        lambda: [p for m in Media.select().where(Media.event == event_id) for p in (m.path, m.thumb_path) if p])
    root = daemon.services.media.root
    return sum((root / p).stat().st_size for p in paths)


async def wait_for_clip(daemon: Daemon, event_id: int, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await daemon.services.db.read(lambda: AlarmEvent.get_by_id(event_id).video_state)) != "ready":
        assert asyncio.get_running_loop().time() < deadline, "no clip in time"
        await asyncio.sleep(0.05)


async def test_the_quota_holds_while_mail_streams_in(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "365d",
                                  "max_media_size": QUOTA})
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        token = await daemon.token("guard1")
        domain = config.smtp.domain
        raw = sample(MAIL)

        # The first event becomes an open alarm, the second waits for MQTT delivery: neither may lose media.
        for n in range(2):
            assert (await daemon.send(distinct(raw, n)))["data"][0] == 250
            await daemon.wait_idle()
        alarm_event, undelivered = 1, 2
        await wait_for_clip(daemon, alarm_event)
        one_event = await event_files(daemon, alarm_event)
        assert (await daemon.api("POST", f"/api/events/{alarm_event}/alarm", token))[0] == 201
        await services.db.write(set_status, domain, undelivered, "dismissed", None)
        await services.db.write(lambda: outbox.enqueue("vmond/test-site/events", b"{}", event_id=undelivered))

        mails = 52  # about 13 times the quota
        with Sampler(services.media.root) as sampler:
            for n in range(2, 2 + mails):
                assert (await daemon.send(distinct(raw, n)))["data"][0] == 250
                await daemon.wait_idle()
                # A guard dismisses each event as it comes: closed events in the order they arrived.
                await services.db.write(set_status, domain, n + 1, "dismissed", None)
            await wait_until(lambda: not services.clips.queued, timeout=120, what="the clips")
            await wait_until(lambda: sampler.samples > 0, timeout=30, what="a sample")
        overshoot = sampler.largest - QUOTA
        print(f"media quota {QUOTA} B, one event {one_event} B, largest seen {sampler.largest} B "
              f"({sampler.largest / QUOTA:.2f}x the quota, {sampler.samples} samples)")
        assert overshoot <= one_event, (sampler.largest, QUOTA, one_event)

        def outcome() -> tuple[set[int], dict[int, str]]:
            with_media = {m.event_id for m in Media.select(Media.event)}
            return with_media, {e.id: e.status for e in AlarmEvent.select()}

        with_media, statuses = await services.db.read(outcome)
        assert alarm_event in with_media and undelivered in with_media
        closed = sorted(i for i, status in statuses.items() if status == "dismissed" and i != undelivered)
        kept = [i for i in closed if i in with_media]
        removed = [i for i in closed if i not in with_media]
        assert removed and kept, (removed, kept)
        assert max(removed) < min(kept), "the oldest closed events lose their media first"
        assert len(statuses) == 2 + mails  # the quota takes media, never the events themselves


async def test_the_count_is_right_after_removals_and_a_restart(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "retention": "30d"})
    raw = sample(MAIL)
    async with running(config) as services:
        daemon = Daemon(services)
        root = services.media.root
        for n in range(3):
            assert (await daemon.send(distinct(raw, n)))["data"][0] == 250
            await daemon.wait_idle()
        for event_id in (1, 2, 3):
            await wait_for_clip(daemon, event_id)
        assert await media_counted(services) == media_on_disk(root) > 0

        def dismiss_and_age() -> None:
            for event_id in (1, 2):
                set_status(config.smtp.domain, event_id, "dismissed", None)
            AlarmEvent.update(received_at=utcnow() - timedelta(days=40)).where(AlarmEvent.id << [1, 2]).execute()

        await services.db.write(dismiss_and_age)
        before = services.media.usage.bytes
        await services.disk.round()  # retention removes events 1 and 2 whole
        assert services.media.usage.bytes == media_on_disk(root) < before
        # Files that no write of this daemon made: a stray one is counted, a crash's old temporary one removed.
        (root / "stray.bin").write_bytes(b"x" * 1000)
        stale = root / ".left-by-a-crash.jpg.0123.tmp"
        stale.write_bytes(b"y" * 5000)
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        fresh = root / ".being-written.jpg.4567.tmp"
        fresh.write_bytes(b"z" * 3000)
        on_disk = media_on_disk(root)

    async with running(config) as services:
        assert await media_counted(services) == on_disk == media_on_disk(services.media.root)
        assert not stale.exists() and fresh.exists()
        status, health = await Daemon(services).api("GET", "/api/health", None)
        assert status == 200 and health["disk"]["media_bytes"] == on_disk


def test_measuring_while_files_change_counts_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk after a start runs while the daemon writes, replaces and removes files: each change is counted
    by the walk or by the change, never by both or neither."""
    monkeypatch.setattr(fsutil, "fsync_file", lambda fd: None)  # durability is not the point here: speed is
    monkeypatch.setattr(media_store, "fsync_directory", lambda path: None)
    for attempt in range(5):
        store = MediaStore(tmp_path / f"media{attempt}")
        store.prepare()
        for day in range(20):
            for n in range(60):
                store.write_sync(f"2024/01/{day:02d}/old-{n}.jpg", b"o" * (100 + n))
        store.usage = MediaUsage()  # a fresh start: nothing counted yet
        walker = threading.Thread(target=store.usage.measure, args=(store.root,))
        walker.start()
        n = 0
        while walker.is_alive() or n < 50:
            store.write_sync(f"2024/01/{n % 20:02d}/new-{n}.jpg", b"n" * (10 + n))
            store.write_sync(f"2024/02/{n // 4:04d}/new-{n}.jpg", b"m" * (10 + n))  # new directories, all along
            store.write_sync(f"2024/01/{n % 20:02d}/old-{n % 60}.jpg", b"r" * (7 * n % 300))  # replaced
            store.delete_sync(f"2024/01/{(n * 7) % 20:02d}/old-{(n * 11) % 60}.jpg")
            n += 1
        walker.join()
        assert store.usage.measured
        assert store.usage.bytes == media_on_disk(store.root), attempt


async def test_a_wake_up_during_a_round_gives_one_more_round(make_config: Callable[..., Config],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[float] = []
    first_round = asyncio.Event()
    release = asyncio.Event()

    async def counting_round(self: DiskKeeper) -> None:
        rounds.append(time.monotonic())
        first_round.set()
        await release.wait()

    monkeypatch.setattr(DiskKeeper, "round", counting_round)
    async with running(make_config()) as services:
        await asyncio.wait_for(first_round.wait(), 10)
        for _ in range(20):
            services.disk.nudge()  # e.g. many writes crossing the quota while the keeper is busy
        release.set()
        await wait_until(lambda: len(rounds) >= 2, timeout=30, what="a round after the wake-ups")
        # The twenty wake-ups were one: none is left over for a third round (a round begins by clearing it) ...
        assert not services.disk._wake.is_set() and len(rounds) == 2
        # ... and the next wake-up gives the next round, the third.
        services.disk.nudge()
        await wait_until(lambda: len(rounds) >= 3, timeout=30, what="the round after one more wake-up")
        assert len(rounds) == 3


async def test_writers_are_not_held_when_nothing_may_go(make_config: Callable[..., Config],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": 0, "max_media_size": "100KB"})
    async with running(config) as services:
        daemon = Daemon(services)
        await media_counted(services)
        started = time.monotonic()
        for n in range(4):  # every event stays active: none may lose its media
            assert (await daemon.send(distinct(sample(MAIL), n)))["data"][0] == 250
            await daemon.wait_idle()
        # Waiting for room in vain would cost ROOM_WAIT for each of the last three mails:
        assert time.monotonic() - started < 2 * retention.ROOM_WAIT
        assert await services.db.read(lambda: Media.select().count()) > 0
        stuck = [r for r in caplog.records if "everything left belongs to open events" in r.getMessage()]
        assert len(stuck) == 1  # said once, not on every mail


async def test_pictures_over_an_events_limit_leave_no_files(make_config: Callable[..., Config],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_IMAGES_PER_EVENT", 2)  # the mail has three pictures
    config = make_config(video={"enabled": False})
    async with running(config) as services:
        daemon = Daemon(services)
        assert (await daemon.send(sample(MAIL)))["data"][0] == 250
        await daemon.wait_idle()
        kept = await services.db.read(lambda: {p for m in Media.select() for p in (m.path, m.thumb_path) if p})
        root = services.media.root
        on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert len(kept) == 4 and on_disk == kept  # two pictures and their thumbnails; the third is not left
        assert await media_counted(services) == media_on_disk(root)
