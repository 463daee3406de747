"""Migration 14's schema: commands from a central station (issue 18).

One row per command id this site has answered, written in the same transaction as the command's change and its
result's outbox row: a command delivered again (the broker's redelivery after a crash, or a replay) finds its id
here and is answered with the first ``result`` again, never applied twice. Rows older than ``mqtt.command_max_age``
are pruned: a command that old is refused as expired before its id is looked up.

An alarm raised, handled or resolved by a central's operator has no local user for it: ``alarm.remote_by`` names
them (``{"opened" | "acknowledged" | "resolved": "<user> at <central>"}``).
"""

from __future__ import annotations

SCHEMA_14 = """
CREATE TABLE "remote_command" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "command_id" VARCHAR(255) NOT NULL,
    "received_at" TEXT NOT NULL,
    "result" TEXT NOT NULL
);
CREATE UNIQUE INDEX "remote_command_command_id" ON "remote_command" ("command_id");
CREATE INDEX "remote_command_received_at" ON "remote_command" ("received_at");
ALTER TABLE "alarm" ADD COLUMN "remote_by" TEXT NOT NULL DEFAULT '{}';
"""
