"""The long-lived services of one running daemon, handed explicitly to the parts that need them."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmond.util.metrics import Metrics

if TYPE_CHECKING:
    from vmond.central.crossnode import BusBridge
    from vmond.central.duties import Node
    from vmond.central.link import MirrorLink
    from vmond.central.media import CentralMedia
    from vmond.config import Config
    from vmond.ingest.cameras import CameraDirectory
    from vmond.ingest.pipeline import Pipeline
    from vmond.ingest.smtp import IngestHandler, SmtpServer
    from vmond.ingest.spool import Spool
    from vmond.live.hub import LiveHub
    from vmond.media.clips import ClipMaker
    from vmond.media.retention import DiskKeeper
    from vmond.media.store import MediaStore
    from vmond.mqtt.forwarder import Forwarder
    from vmond.notify.sender import NotificationSender
    from vmond.store.changes import Changes
    from vmond.store.db import Database
    from vmond.supervision.watcher import Supervisor
    from vmond.util.bus import Bus


@dataclass
class Services:
    config: Config
    db: Database
    bus: Bus
    spool: Spool
    media: MediaStore
    cameras: CameraDirectory
    io: Executor
    ingest: IngestHandler
    pipeline: Pipeline
    changes: Changes  # the one way to record a change: store, then bus, then the outbox's senders
    smtp: SmtpServer | None = None  # set once listening
    web_port: int = 0
    started_at: float = field(default=0.0)
    mqtt: Forwarder | None = None  # when mqtt.enabled
    metrics: Metrics = field(default_factory=Metrics)
    clips: ClipMaker | None = None
    disk: DiskKeeper | None = None
    live: LiveHub | None = None  # snapshots and live view from the cameras' RTSP streams
    supervisor: Supervisor | None = None  # camera silence and the appliance's own health
    notifications: NotificationSender | None = None  # notify.targets and contacts' notify_url (issue 17)
    mirror: MirrorLink | None = None  # on a central station: the sites' messages in (issue 18)
    central_media: CentralMedia | None = None  # a central station: the sites' media, fetched and cached (issue 18)
    node: Node | None = None  # a central station: this node's leases and the duties it runs (issue 19)
    bridge: BusBridge | None = None  # a central on PostgreSQL: live updates to and from the other nodes (issue 19)
