"""A central station's pictures and clips: fetched from the sites when someone opens them, cached, served.

The sites sit behind NAT, so MQTT is the only way to them. A site's file arrives on ``<prefix>/<site>/media/<id>``
(its thumbnail on ``.../thumbnail``): eagerly as the site's ``mqtt.publish_media`` says, or when asked with a
``media`` command. :meth:`CentralMedia.receive` (the mirror link's ``on_media``) writes it into the media
directory (``central/<site>/<id>`` and ``<id>.thumb``) and names it on the mirrored row; the event is announced
as updated, so open pages show it.

Several central nodes (issue 19): every node receives every media message (not through the shared subscription)
and keeps a cache of its own on its own disk, so what one node fetched another serves too. A row naming a cached
file says that some node has it: whether this node has it is always the file itself (:meth:`CentralMedia._cached`).
A file may arrive before its event is mirrored (the event's message went to another node, or came on this node's
other connection): it waits for the event a few seconds, in memory, bounded.

:meth:`CentralMedia.fetch` serves a file that is not cached yet: one ``media`` command (never a second while one
is pending), then a bounded wait, woken when the file arrives or the site refuses (its media gone). Opening an
event asks for all its uncached pictures in one command (:meth:`CentralMedia.prefetch_event`). The cache bound
(``central.media_cache``) is the disk keeper's quota here; :class:`vmond.central.mediacache.CacheBound`
is how it frees room.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from vmond.config import Config
from vmond.media.store import MediaStore
from vmond.store.centralmedia import (
    event_pictures,
    is_mirrored_media,
    media_origin,
    request_site_media,
    store_media_file,
)
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.util.bus import Bus
from vmond.util.tasks import BackgroundService

log = logging.getLogger(__name__)

MAX_PAYLOAD = 32 << 20  # bytes: a site bounds what it sends (mqtt.max_media_size); this bounds what is kept
FETCH_WAIT = 10.0  # seconds a request waits for the site's file; then 504 and the page retries when it comes
PENDING_FOR = 60.0  # seconds a media command counts as pending: no second one for the same media meanwhile
MAX_WAITING = 64  # requests waiting for a site's file at once; more get 503
MEDIA_DIR = "central"
PARK_FOR = 10.0  # seconds a file whose event is not mirrored yet waits for it
PARK_BYTES = 64 << 20  # bytes of such files held at once; more are dropped (asked for again when opened)
PARK_COUNT = 256  # such files held at once


class NotFetched(Exception):
    """The file cannot be served: *status* 404 (the site no longer has it, or it is not a site's), 503 (too many
    waiting, or no way to ask), 504 (the site did not send it in time)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def cache_relpath(site_key: str, remote_id: int, thumbnail: bool) -> str:
    """Where a site's media file is cached in the media directory (a site id is a-z, 0-9 and -)."""
    return f"{MEDIA_DIR}/{site_key}/{remote_id}{'.thumb' if thumbnail else ''}"


class CentralMedia(BackgroundService):
    """``async with CentralMedia(...)``: receives the sites' files, fetches the missing ones on demand."""

    task_name = "central media"

    def __init__(self, config: Config, db: Database, changes: Changes, bus: Bus, media: MediaStore,
                 io: Executor) -> None:
        self._config = config
        self._db, self._changes, self._bus, self._media, self._io = db, changes, bus, media, io
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}  # media id -> requests waiting for it
        self._pending: dict[int, float] = {}  # media id -> until when its media command counts as pending
        self._commands: dict[str, list[int]] = {}  # command id -> the media ids it asked for
        # media id -> why the site refused to send it, and until when that answer stands (then it is asked again)
        self._refused: dict[int, tuple[str, float]] = {}
        self._parked: set[asyncio.Task[None]] = set()  # files waiting for their event to be mirrored
        self._parked_bytes = 0
        self._mirrored = asyncio.Event()  # set (and replaced) when an event is mirrored, on any node
        self.received = self.dropped = 0

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    # -- receiving ---------------------------------------------------------------------------------------------

    async def receive(self, site_key: str, remote_id: int, thumbnail: bool, payload: bytes) -> None:
        """A site's media file (or its thumbnail) from MQTT: cached, named on its row, its event announced."""
        what = f"site {site_key}'s media {remote_id}{' thumbnail' if thumbnail else ''}"
        if len(payload) > MAX_PAYLOAD:
            log.warning("central: %s is %d bytes, more than %d; dropped", what, len(payload), MAX_PAYLOAD)
            self.dropped += 1
            return
        if not await self._db.read(is_mirrored_media, site_key, remote_id):
            self._park(what, site_key, remote_id, thumbnail, payload)
            return
        await self._store(what, site_key, remote_id, thumbnail, payload)

    async def _store(self, what: str, site_key: str, remote_id: int, thumbnail: bool, payload: bytes) -> None:
        relpath = cache_relpath(site_key, remote_id, thumbnail)
        loop = asyncio.get_running_loop()
        try:
            digest = await loop.run_in_executor(self._io, self._write, relpath, payload)
        except OSError as exc:  # not worth holding up the mirror: it is asked for again when someone opens it
            log.error("central: could not cache %s: %s", what, exc)
            self.dropped += 1
            return
        media_id = await self._changes.record(store_media_file, site_key, remote_id, thumbnail, relpath, digest,
                                              len(payload), self._config.smtp.domain)
        if media_id is None:  # its row went meanwhile (retention)
            await loop.run_in_executor(self._io, self._media.delete_sync, relpath)
            return
        self.received += 1
        self._refused.pop(media_id, None)
        if not thumbnail:
            self._pending.pop(media_id, None)
        self._wake(media_id)

    def _park(self, what: str, site_key: str, remote_id: int, thumbnail: bool, payload: bytes) -> None:
        """Keep a file whose event is not mirrored yet until it is (at most ``PARK_FOR``), off the mirror's way."""
        if len(self._parked) >= PARK_COUNT or self._parked_bytes + len(payload) > PARK_BYTES:
            log.warning("central: %s came before its event and too many files wait already; dropped", what)
            self.dropped += 1
            return
        self._parked_bytes += len(payload)
        task = asyncio.create_task(self._when_mirrored(what, site_key, remote_id, thumbnail, payload),
                                   name="central media waits for its event")
        self._parked.add(task)
        task.add_done_callback(self._parked.discard)

    async def _when_mirrored(self, what: str, site_key: str, remote_id: int, thumbnail: bool,
                             payload: bytes) -> None:
        deadline = time.monotonic() + PARK_FOR
        try:
            while True:
                mirrored = self._mirrored
                left = deadline - time.monotonic()
                if left > 0:
                    # Woken when an event is mirrored here or on another node; a second at most, should a
                    # wake-up be missed.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(1.0, left)):
                            await mirrored.wait()
                if await self._db.read(is_mirrored_media, site_key, remote_id):
                    await self._store(what, site_key, remote_id, thumbnail, payload)
                    return
                if left <= 0:
                    log.debug("central: %s is not mirrored here within %.0f s; dropped", what, PARK_FOR)
                    self.dropped += 1
                    return
        except Exception:  # noqa: BLE001 - a cache: asked for again when someone opens it
            log.exception("central: could not keep %s", what)
            self.dropped += 1
        finally:
            self._parked_bytes -= len(payload)

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._parked):
            task.cancel()
        if self._parked:
            await asyncio.wait(list(self._parked), timeout=5)
        await super().__aexit__(*exc_info)

    def _write(self, relpath: str, payload: bytes) -> str:
        self._media.write_sync(relpath, payload)
        return hashlib.sha256(payload).hexdigest()

    def _wake(self, media_id: int) -> None:
        for waiter in self._waiters.get(media_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    # -- fetching on demand ------------------------------------------------------------------------------------

    async def fetch(self, media_id: int, thumbnail: bool, who: dict[str, Any] | None, known: str | None = None
                    ) -> str:
        """The cached file of a site's media (relative to the media directory), asked for from the site when it
        is not here; waits at most ``FETCH_WAIT``. *known* is the file its row names. Raises :class:`NotFetched`."""
        if known and await self._cached(known):
            return known
        deadline = time.monotonic() + FETCH_WAIT
        requested = False
        while True:
            origin = await self._db.read(media_origin, media_id)
            if origin is None:
                raise NotFetched(404, "not a site's media")
            if thumbnail and origin["kind"] != "image":
                raise NotFetched(404, "only pictures have thumbnails")
            # This node's copy, whether or not the row names it (another node's cache bound may have reset it).
            relpath = origin["thumb_path" if thumbnail else "path"] or cache_relpath(
                origin["site"], origin["remote_id"], thumbnail)
            if await self._cached(relpath):
                return str(relpath)
            refused = self._refused.get(media_id)
            if refused is not None and refused[1] > time.monotonic():
                raise NotFetched(404, f"the site could not send it: {refused[0]}")
            if not requested:
                if self.waiting >= MAX_WAITING:
                    raise NotFetched(503, "too many files are being fetched from the sites; try again shortly")
                await self.request([origin], who)
                requested = True
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotFetched(504, f"the site has not sent it within {FETCH_WAIT:.0f} s (it may be offline); "
                                      "the page shows it when it arrives")
            await self._wait(media_id, left)

    async def _wait(self, media_id: int, timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(media_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(media_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(media_id, None)

    async def _cached(self, relpath: str) -> bool:
        path = self._media.resolve(relpath)
        return await asyncio.get_running_loop().run_in_executor(self._io, path.is_file)

    async def prefetch_event(self, event_id: int, who: dict[str, Any] | None) -> None:
        """Someone opened the event: ask its site in one command for all its pictures this node has not cached
        (the row may say that another node has)."""
        missing = []
        for origin in await self._db.read(event_pictures, event_id):
            relpath = origin["path"] or cache_relpath(origin["site"], origin["remote_id"], False)
            if not await self._cached(relpath):
                missing.append(origin)
        await self.request(missing, who)

    async def request(self, origins: Iterable[dict[str, Any]], who: dict[str, Any] | None) -> None:
        """Send one ``media`` command per site event for the files in *origins* that no pending command asks
        for already. A thumbnail comes with its picture."""
        now = time.monotonic()
        groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for origin in origins:
            if self._pending.get(origin["id"], 0.0) > now:
                continue
            self._refused.pop(origin["id"], None)
            self._pending[origin["id"]] = now + PENDING_FOR  # before any wait: a request meanwhile sends none
            groups.setdefault((origin["site"], origin["event_remote_id"], origin["event_id"]), []).append(origin)
        sent: set[int] = set()
        try:
            for (site_key, event_remote_id, event_id), items in groups.items():
                await self._send(site_key, event_remote_id, event_id, items, who)
                sent.update(item["id"] for item in items)
        except BaseException:
            for items in groups.values():
                for item in items:
                    if item["id"] not in sent:
                        self._pending.pop(item["id"], None)  # not asked for after all
            raise
        self._forget_expired(now)

    async def _send(self, site_key: str, event_remote_id: int, event_id: int, items: list[dict[str, Any]],
                    who: dict[str, Any] | None) -> None:
        secret = await asyncio.get_running_loop().run_in_executor(self._io, self._secret, site_key)
        if secret is None:
            log.warning("central: no command secret for site %s (central.sites or central.command_secret): its "
                        "media cannot be asked for", site_key)
            raise NotFetched(503, f"no command secret for site {site_key}")
        user = (who or {}).get("user_id"), str((who or {}).get("username") or "central")
        command = await self._changes.record(
            request_site_media, site_key, event_remote_id, [item["remote_id"] for item in items], event_id, user,
            self._config.site.name or self._config.site.id, secret, self._config.central.mqtt.topic_prefix)
        if command is not None:
            self._commands[command["id"]] = [item["id"] for item in items]
            log.info("central: asked site %s for media %s of its event %d (command %s)", site_key,
                     ", ".join(str(item["remote_id"]) for item in items), event_remote_id, command["id"])

    def _secret(self, site_key: str) -> str | None:
        central = self._config.central
        site = central.find_site(site_key)
        secret = (site.read_command_secret() if site is not None else None) or central.read_command_secret()
        return None if secret is None else secret.reveal()

    def _forget_expired(self, now: float) -> None:
        for media_id in [m for m, until in self._pending.items() if until <= now]:
            del self._pending[media_id]
        for media_id in [m for m, (_, until) in self._refused.items() if until <= now]:
            del self._refused[media_id]
        if len(self._commands) > 1000:  # answers that never came: keep the newest
            for uid in list(self._commands)[:-1000]:
                del self._commands[uid]

    # -- the sites' answers ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        """A refused ``media`` command (the site no longer has the file) ends the requests waiting for it."""
        while True:
            with self._bus.subscribe() as subscription:
                async for message in subscription:
                    if message.type == "command.updated":
                        self._answered(message.data)
                    elif message.type in ("event.created", "event.updated"):
                        self._mirrored.set()  # the files waiting for their event look again
                        self._mirrored = asyncio.Event()
            await asyncio.sleep(0.1)  # fell behind and was cut off: subscribe again

    def _answered(self, command: dict[str, Any]) -> None:
        media_ids = self._commands.pop(str(command.get("id")), None)
        if media_ids is None or command.get("state") == "pending":
            return
        # Done: the site has queued the files, and they come right behind its answer; one that has not come by
        # FETCH_WAIT later (gone from the site's disk, or too large) may be asked for again.
        now = time.monotonic()
        until = now + FETCH_WAIT
        for media_id in media_ids:
            if command.get("state") == "refused":  # said at once to whoever asks within PENDING_FOR
                self._refused[media_id] = (str(command.get("error") or "refused"), now + PENDING_FOR)
                self._pending.pop(media_id, None)
                self._wake(media_id)
            elif media_id in self._pending:
                self._pending[media_id] = min(self._pending[media_id], until)

    async def served(self, relpath: str) -> None:
        """A cached file was served: it becomes the most recently used (the cache bound removes the least)."""
        await asyncio.get_running_loop().run_in_executor(self._io, touch, self._media, relpath)


def touch(media: MediaStore, relpath: str) -> None:
    """Mark the file as just served: its modification time is when it was last used (blocking). Browsers keep
    a served file for a day (Cache-Control), so this is once per file and browser, not per look at the wall."""
    try:
        os.utime(media.resolve(relpath))
    except FileNotFoundError:
        pass
