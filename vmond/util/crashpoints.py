"""Deliberate crashes for the fault tests: ``VMOND_CRASHPOINT=<name>`` makes the daemon die (``os._exit``) the
moment it reaches that step, as a power cut or ``kill -9`` would, so a test can prove nothing acknowledged is lost.

Unset (always, outside the fault tests) it costs one dictionary lookup per step.
"""

from __future__ import annotations

import os

POINTS = (
    "after_data_read",     # the message is in memory, nothing on disk yet
    "after_spool_write",   # written to spool/tmp, not fsynced
    "after_spool_fsync",   # fsynced in spool/tmp, not renamed
    "after_spool_rename",  # in spool/new and its directory fsynced: durable, no 250 yet
    "before_250",          # about to answer 250
    "after_250",           # the camera has its 250
    "after_db_commit",     # the event is committed, the spool file not yet removed
    "after_publish",       # an MQTT message handed to the client library, no PUBACK yet (not the config)
    "before_puback",       # the broker's PUBACK arrived, the outbox row not yet removed
    "after_command_commit",  # a central's command applied and its result queued, the broker not yet told (PUBACK)
)
EXIT_CODE = 86


def crashpoint(name: str) -> None:
    if os.environ.get("VMOND_CRASHPOINT") == name:
        os.write(2, f"vmond: crash point {name}\n".encode())
        os._exit(EXIT_CODE)
