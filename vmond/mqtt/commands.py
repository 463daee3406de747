"""Commands from a central station in (issue 18): ``<prefix>/<site>/commands``, each applied exactly once.

With ``mqtt.commands`` the appliance keeps a second broker connection of its own: a fixed client id
(``<mqtt.client_id>-commands``) with clean session off and a QoS 1 subscription (made again at every connect),
so the broker keeps the commands sent while vmond was away and hands them over when it is back.

paho acknowledges a QoS 1 message (PUBACK) when its ``on_message`` returns. So ``on_message`` waits, on paho's
thread, until the event loop has checked the command and committed its whole outcome (the action, the remembered
id and the queued result, one transaction: :mod:`vmond.store.remote`). A crash before that commit leaves the
message unacknowledged and the broker delivers it again; a crash after it finds the id remembered, and the
first result is sent again instead of applying twice. This works alike on paho 1.6 and 2.x (no manual acks).

Results travel through the outbox (the forwarder sends them), never on this connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import paho.mqtt.client as mqtt

from vmond.config import Config
from vmond.mqtt.client import LinkSettings, connected_ok, session_client, stop_client
from vmond.store.changes import Changes
from vmond.store.commands import CommandRefused, read_command
from vmond.store.db import Database
from vmond.store.messages import Topics
from vmond.store.remote import answer_refusal, apply_command, forget_commands
from vmond.util.clock import utcnow
from vmond.util.crashpoints import crashpoint

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 60.0  # seconds paho's thread waits for a command's transaction before acknowledging anyway
PRUNE_INTERVAL = 600.0  # seconds between prunes of remembered command ids
STOP_TIMEOUT = 5.0


def command_client_id(client_id: str) -> str:
    """The fixed client id of the commands connection: the broker keeps its session (and queued commands)."""
    return f"{client_id}-commands"


class CommandReceiver:
    """``async with CommandReceiver(config, db, changes, io):`` receives and applies commands until the block ends."""

    def __init__(self, config: Config, db: Database, changes: Changes, io: Executor, *,
                 prune_interval: float = PRUNE_INTERVAL) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._db, self._changes, self._io = db, changes, io
        self.topics = Topics(config.mqtt.topic_prefix, config.site.id)
        self._prune_interval = prune_interval
        self._secret = ""
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.applied = self.refused = 0

    async def __aenter__(self) -> CommandReceiver:
        loop = self._loop = asyncio.get_running_loop()
        await self._db.write(forget_commands, self._mqtt.command_max_age)
        try:
            secret = await loop.run_in_executor(self._io, self._mqtt.read_command_secret)
            settings = await loop.run_in_executor(self._io, LinkSettings.from_config, self._mqtt)
        except (OSError, ValueError) as exc:
            log.error("mqtt: commands are off: cannot read the command secret or the MQTT settings: %s", exc)
            return self
        if secret is None or not secret.reveal():
            log.error("mqtt: commands are off: the command secret is empty")
            return self
        self._secret = secret.reveal()
        settings = dataclasses.replace(settings, client_id=command_client_id(settings.client_id))
        self._client = session_client(settings, self._on_connect, self._on_message)
        self._pruner = asyncio.create_task(self._prune(), name="mqtt-command-prune")
        log.info("mqtt: taking commands on %s as %s", self.topics.commands, settings.client_id)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self._client is not None:
            client = self._client
            self._client = None
            # disconnect + loop_stop join paho's thread, which may be waiting on the loop for a command: not here.
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(stop_client, client))

    # -- paho's thread -----------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if connected_ok(rc):  # the session keeps the subscription; made again in case the broker lost it
            client.subscribe(self.topics.commands, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        loop = self._loop
        if loop is None or message.topic != self.topics.commands:
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self.handle(bytes(message.payload)), loop)
        except RuntimeError:  # the loop is closed: vmond is going away, and the broker delivers it again
            return
        try:
            future.result(APPLY_TIMEOUT)  # acknowledged (on return) only once its outcome is committed
            crashpoint("after_command_commit")
        except FutureTimeout:
            log.error("mqtt: a command took longer than %.0f s to apply; acknowledged, its result follows",
                      APPLY_TIMEOUT)
        except Exception:  # noqa: BLE001 - an exception here would end paho's network thread
            log.exception("mqtt: a command could not be handled")

    # -- the loop ----------------------------------------------------------------------------------------------

    async def handle(self, payload: bytes) -> dict[str, Any]:
        """Check and apply one command payload; its result is queued in the outbox. Returns the result."""
        site = self._config.site.id
        try:
            command = read_command(payload, self._secret, site, self._mqtt.command_max_age, utcnow())
        except CommandRefused as exc:
            self.refused += 1
            log.warning("mqtt: command %s refused: %s", exc.command_id or "(no id)", exc.error)
            return await self._changes.record(answer_refusal, site, exc.command_id, exc.action, exc.error)
        try:
            result, new = await self._changes.record(apply_command, self._config.smtp.domain, site, command,
                                                     self._config.alarms.require_resolution_code)
        except Exception as exc:  # noqa: BLE001 - rolled back, nothing applied: say so rather than stay silent
            self.refused += 1
            log.exception("mqtt: command %s (%s by %s) could not be applied", command.id, command.action, command.who)
            return await self._changes.record(answer_refusal, site, command.id, command.action,
                                              f"the site could not apply it ({type(exc).__name__}); try again")
        if not new:
            log.info("mqtt: command %s seen before; its first result is sent again", command.id)
        elif result["ok"]:
            self.applied += 1
            log.info("mqtt: command %s applied: %s by %s", command.id, command.action, command.who)
        else:
            self.refused += 1
            log.warning("mqtt: command %s (%s by %s) refused: %s", command.id, command.action, command.who,
                        result["error"])
        return result

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                await self._db.write(forget_commands, self._mqtt.command_max_age)
            except Exception:  # noqa: BLE001 - logged; tried again at the next interval
                log.exception("mqtt: could not prune remembered command ids")

