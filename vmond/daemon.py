"""Assembling and running the daemon: each service an async context, entered in order, left in reverse.

Start: database (migrated, YAML accounts synced) -> spool and media directories -> MQTT forwarder (when
enabled) -> camera directory -> parser and encoder workers -> live view (snapshot worker; its streams start on
demand) -> pipeline (replays the spool) -> supervision -> HTTP -> SMTP. READY=1 goes to
systemd only once both sockets are bound.
SIGHUP applies the configuration file's accounts and cameras (see :mod:`vmond.reload`).
Stop (SIGTERM/SIGINT): STOPPING=1, then SMTP stops taking mail (open sessions finish or get 421), the web
server closes WebSockets with GOING_AWAY, the pipeline task is cancelled and awaited, the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vmond.central.adoption import Adopter, wait_not_adopted
from vmond.central.crossnode import BusBridge
from vmond.central.duties import NOTIFY, OUTBOX, SITEWATCH, Node
from vmond.central.link import MirrorLink
from vmond.central.media import CentralMedia
from vmond.central.mediacache import CacheBound
from vmond.central.sitewatch import SiteWatcher
from vmond.config import Config
from vmond.config.tls import ensure_self_signed
from vmond.ingest.cameras import CameraDirectory
from vmond.ingest.pipeline import Pipeline
from vmond.ingest.smtp import IngestHandler, SmtpServer
from vmond.ingest.spool import Spool
from vmond.live.hub import LiveHub
from vmond.media.clips import ClipMaker
from vmond.media.retention import DiskKeeper
from vmond.media.store import MediaStore
from vmond.mqtt.commands import CommandReceiver
from vmond.mqtt.forwarder import Forwarder
from vmond.notify.sender import NotificationSender
from vmond.ops.backup import data_dir_lock
from vmond.reload import reload_accounts
from vmond.services import Services
from vmond.store.changes import Changes
from vmond.store.db import Database
from vmond.store.messages import outbox_topics
from vmond.store.notifications import NotifyRules
from vmond.store.siteconfig import requeue_config
from vmond.store.sync import sync_accounts
from vmond.store.users import user_count
from vmond.supervision.watcher import Probes, Supervisor
from vmond.util.bus import Bus
from vmond.util.metrics import Metrics
from vmond.util.ratelimit import Repeats
from vmond.util.systemd import Notifier, extend_start_timeout, watchdog_interval, watchdog_loop
from vmond.util.workers import WorkerPool, prepare_fork_server
from vmond.web.app import WebServer, create_app

log = logging.getLogger(__name__)

IO_THREADS = 4  # spool and media writes (mostly waiting for fsync) and small file reads
PIPELINE_IO_THREADS = 3  # the pipeline's reads of spooled mails and writes of their media
PARSER_MEMORY = 1 << 30  # address space of the mail-parsing worker: a hostile mail cannot take the box's memory
ENCODER_MEMORY = 1536 << 20  # libx264 on 1080p frames peaks near 550 MB of address space
# Descriptors besides the SMTP and dashboard connections: database, spool and media files, worker pipes, MQTT,
# RTSP sessions, logs. The connection limits keep the rest within the process's limit, so neither door can take
# the descriptors the other (or the database) needs.
FD_RESERVE = 256


def ensure_descriptors(config: Config) -> None:
    """Raise the soft limit on open files to what the connection limits need, or say why it cannot be."""
    needed = config.smtp.max_connections + config.web.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("only %d open files are allowed (LimitNOFILE), but smtp.max_connections, web.max_connections "
                        "and vmond's own files need %d: lower the limits or raise LimitNOFILE", target, needed)


class QuietLoopErrors:
    """The event loop's exception handler: an error is logged in full the first time, then once per *interval*
    with how often it recurred. Running out of descriptors fails every accept (it once wrote 549,111 tracebacks
    in a minute); the log must still have room for what else happens."""

    def __init__(self, interval: float = 60.0) -> None:
        self._repeats = Repeats(interval)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        key = (context.get("message"), type(error).__name__, getattr(error, "errno", None))
        quiet = self._repeats.due(key)
        if quiet is None:
            return
        if quiet:
            context = {**context, "message": f"{context.get('message')} (repeated {quiet} times since last said)"}
        loop.default_exception_handler(context)


def supervision_probes(spool: Spool, metrics: Metrics, mqtt: Forwarder | None) -> Probes:
    """What supervision watches: free space where the spool (and the data) live, the broker link (with MQTT on),
    clips failing in a row, the oldest mail waiting in the spool."""
    return Probes(free_space=spool.free_space,
                  mqtt_connected=None if mqtt is None else (lambda: mqtt.connected),
                  clip_failures_in_a_row=lambda: metrics.clip_failures_in_a_row,
                  spool_oldest_age=spool.oldest_pending_age)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Services]:
    """All services up and listening; yields them, and stops them in reverse order on exit."""
    loop = asyncio.get_running_loop()
    data_dir = config.storage.data_dir
    central = config.central.enabled  # a central station (issue 18): no camera mail; its link is central.mqtt
    if central:
        config = dataclasses.replace(config, mqtt=config.central.link(config.mqtt))
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(data_dir_lock(data_dir))  # one daemon (or restore) per data directory
        io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="io")
        stack.push_async_callback(asyncio.to_thread, io.shutdown)
        # The pipeline's own: a burst's media writes never keep the SMTP door's spool writes (its 250s) waiting.
        pipeline_io = ThreadPoolExecutor(max_workers=PIPELINE_IO_THREADS, thread_name_prefix="pipeline-io")
        stack.push_async_callback(asyncio.to_thread, pipeline_io.shutdown)

        db = await stack.enter_async_context(Database(data_dir / "vmond.db",
                                                           keep_free=config.storage.min_free_space,
                                                           extend_start=extend_start_timeout,
                                                           url=config.storage.database,
                                                           password=config.storage.read_database_password()))
        counts = await db.write(sync_accounts, config.accounts)
        log.info("configuration: %(accounts)d account(s), %(cameras)d camera(s) declared, %(retired)d retired",
                 counts)
        spool = Spool(data_dir / "spool", config.storage.min_free_space)
        media = MediaStore(data_dir / "media")
        await loop.run_in_executor(io, spool.prepare)
        await loop.run_in_executor(io, media.prepare)
        if config.web.tls.self_signed and config.web.tls.certificate is None:
            config = await loop.run_in_executor(io, ensure_self_signed, config)

        mqtt = mirror = node = bridge = None
        central_media = None  # a central's copies of the sites' pictures and clips
        bus = Bus()
        # A central reports nothing of its own over MQTT (what it mirrors is the sites' to report): no topics.
        changes = Changes(db, bus, None if central else outbox_topics(config),
                          None if central else NotifyRules.from_config(config))
        notifier = None
        if central and config.storage.database is not None and config.storage.postgresql:
            # Several central nodes on one PostgreSQL: each node's changes reach every node's dashboards.
            password = config.storage.read_database_password()
            bridge = await stack.enter_async_context(BusBridge(
                config.storage.database, config.central.node, changes,
                password=None if password is None else password.reveal()))
        if central:  # one of several central nodes (issue 19): the duties run where their leases are held
            node = await stack.enter_async_context(Node(db, config.central.node))
            changes.on_queued(node.waker(OUTBOX))  # commands to the sites wait in the outbox
            changes.on_notified(node.waker(NOTIFY))
            central_media = await stack.enter_async_context(CentralMedia(config, db, changes, bus, media, io))
            await wait_not_adopted(db, config.central.node)  # a survivor still emptying this node's session
            mirror = await stack.enter_async_context(MirrorLink(config, db, changes, io,
                                                                on_media=central_media.receive,
                                                                may_leave=node.leave, stay=node.stay))
            mirror.on_available = node.waker(SITEWATCH)  # an edge's last will shows at once
            await stack.enter_async_context(Adopter(db, config.central.node, mirror))
        else:
            if config.mqtt.enabled:  # before the pipeline: it stops after it, forwarding what the pipeline queued
                mqtt = await stack.enter_async_context(Forwarder(config, db, media, io))
                changes.on_queued(mqtt.notify)  # a change waits in the MQTT outbox: send it now, not at the next poll
                if config.mqtt.commands:  # commands from a central station (issue 18); results via the outbox
                    await stack.enter_async_context(CommandReceiver(config, db, changes, io))
            await requeue_config(changes, config)  # the central station's mirror of the site, as it is now
            # Notifications (issue 17): like the forwarder, before the pipeline, so it sends what it queued.
            notifier = await stack.enter_async_context(NotificationSender(config, db, changes))
            changes.on_notified(notifier.wake)
        cameras = CameraDirectory(db, config)
        await cameras.reload()
        # vmond.live.grab: live view's snapshot worker and reader processes are forked from the same server.
        prepare_fork_server(["vmond.ingest.prepare", "vmond.media.clipwork", "vmond.media.video",
                             "vmond.live.work", "vmond.live.grab"])
        parser = await stack.enter_async_context(WorkerPool("parser", memory_limit=PARSER_MEMORY))
        encoder = await stack.enter_async_context(WorkerPool("encoder", max_tasks=50, memory_limit=ENCODER_MEMORY,
                                                                idle=True))
        metrics = Metrics()
        cache = CacheBound(db, media, io) if central else None  # a central's media are a cache, bounded
        keeper = await stack.enter_async_context(DiskKeeper(config, db, media, io,
                                                            free_to=None if cache is None else cache.free_to))
        clips = await stack.enter_async_context(ClipMaker(config, db, changes, media, encoder, metrics, io,
                                                          make_room=keeper.make_room))
        live = await stack.enter_async_context(LiveHub(config, db, media, io, changes))
        pipeline = Pipeline(config, spool, media, db, changes, pipeline_io, parser, metrics, clips,
                            on_disk_full=keeper.nudge, make_room=keeper.make_room)
        clips.wait_while = lambda: pipeline.busy  # clips give way while mails wait to become events
        ingest = IngestHandler(config, cameras, spool, db, io, pipeline.notify, on_low_disk=keeper.nudge)
        services = Services(config=config, db=db, bus=bus, spool=spool, media=media, cameras=cameras, io=io,
                            ingest=ingest, pipeline=pipeline, changes=changes, started_at=time.monotonic(), mqtt=mqtt,
                            metrics=metrics, clips=clips, disk=keeper, live=live, notifications=notifier,
                            mirror=mirror, central_media=central_media, node=node, bridge=bridge)
        if node is not None:
            _central_duties(node, services, media)

        await stack.enter_async_context(pipeline)
        if not central:  # a central's cameras are the sites' to supervise
            services.supervisor = await stack.enter_async_context(Supervisor(
                config, db, changes, supervision_probes(spool, metrics, mqtt), io))
        web_server = await stack.enter_async_context(WebServer(config, create_app(config, services)))
        services.web_port = web_server.port
        if not central:
            services.smtp = await stack.enter_async_context(SmtpServer(config, ingest, cameras, metrics))
        yield services


def _central_duties(node: Node, services: Services, media: MediaStore) -> None:
    """A central's duties, each run by one node at a time (issue 19): the command forwarder (the outbox to the
    sites), site supervision, notifications. Where a duty does not run, its service is None here."""
    config, db, changes, io = services.config, services.db, services.changes, services.io
    mirror = services.mirror
    assert mirror is not None

    def forwarding(forwarder: Forwarder | None) -> None:
        services.mqtt = forwarder

    def notifying(sender: NotificationSender | None) -> None:
        services.notifications = sender

    node.add(OUTBOX, lambda: Forwarder(config, db, media, io), on_start=forwarding, on_stop=lambda: forwarding(None),
             wake=lambda forwarder: forwarder.notify())
    # Sites supervised: offline (their last will) or silent longer than central.site_silence.
    node.add(SITEWATCH, lambda: SiteWatcher(config, db, changes, lambda: mirror.listening_since),
             wake=lambda watcher: watcher.nudge())
    node.add(NOTIFY, lambda: NotificationSender(config, db, changes), on_start=notifying,
             on_stop=lambda: notifying(None), wake=lambda sender: sender.wake())


async def _reloads(services: Services, requested: asyncio.Event, notifier: Notifier) -> None:
    while True:
        await requested.wait()
        requested.clear()
        notifier.reloading()
        outcome = await reload_accounts(services)
        notifier.ready(outcome)


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the accounts and cameras from the configuration file."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    loop.set_exception_handler(QuietLoopErrors())
    ensure_descriptors(config)
    notifier = Notifier()
    try:
        async with running(config) as services:
            if services.smtp is None:
                summary = (f"central station, dashboard on port {services.web_port}, mirroring "
                           f"{'any site' if config.central.auto_sites else f'{len(config.central.sites)} site(s)'}")
            else:
                summary = (f"SMTP on port {services.smtp.port}, dashboard on port {services.web_port}, "
                           f"{len(services.cameras)} camera(s)")
            notifier.ready(summary)
            log.info("vmond ready: %s", summary)
            await _first_run_hint(services)
            tasks = [asyncio.create_task(_reloads(services, reload_requested, notifier), name="reloads")]
            if (interval := watchdog_interval()) is not None:
                tasks.append(asyncio.create_task(watchdog_loop(notifier, interval, services.db.ping),
                                                 name="watchdog"))
            await stop.wait()
            log.info("stopping")
            notifier.stopping()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        notifier.close()
    log.info("vmond stopped")


async def _first_run_hint(services: Services) -> None:
    if await services.db.read(user_count) == 0:
        config = services.config
        host = config.web.listen.host or "this-host"
        if host in ("0.0.0.0", "::"):
            host = "this-host"
        scheme = "https" if config.web.tls.certificate or config.web.tls.self_signed else "http"
        log.warning("no users yet: open %s://%s:%d/setup to create the first admin, or run "
                    "'vmond user add NAME --role admin --config %s'", scheme, host, services.web_port,
                    config.source or "FILE")
