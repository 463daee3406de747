"""Migration 15's schema: a central station's mirror of its sites (issue 18).

On a central, each appliance ("site") that publishes to the broker has a ``site`` row: its link (``online`` from
its ``available`` topic, ``last_message_at``, ``heartbeat_at``) and its last status message. The site's accounts,
cameras, events, alarms and media are mirrored into the ordinary tables, each row naming its ``site_id`` and the
id it has on the site (``remote_id``, unique per site), so the wall, the queue and the alarm pages work on them
unchanged. On an appliance these columns stay NULL.

``central_command`` is every command an operator's action became: sent through the outbox (so at least once,
across restarts and broker outages), ``pending`` until the site's result says ``done`` or ``refused``.
"""

from __future__ import annotations

_MIRRORED = ("account", "camera", "alarm_event", "alarm", "media")

SCHEMA_15 = """
CREATE TABLE "site" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "key" VARCHAR(255) NOT NULL,
    "name" VARCHAR(255) NOT NULL,
    "timezone" VARCHAR(255),
    "version" VARCHAR(255),
    "online" INTEGER,
    "last_message_at" TEXT,
    "heartbeat_at" TEXT,
    "status" TEXT NOT NULL DEFAULT '{}',
    "config_at" TEXT,
    "created_at" TEXT NOT NULL
);
CREATE UNIQUE INDEX "site_key" ON "site" ("key");
""" + "".join(f"""
ALTER TABLE "{table}" ADD COLUMN "site_id" INTEGER REFERENCES "site" ("id") ON DELETE CASCADE;
ALTER TABLE "{table}" ADD COLUMN "remote_id" INTEGER;
CREATE UNIQUE INDEX "{table}_site_id_remote_id" ON "{table}" ("site_id", "remote_id");
""" for table in _MIRRORED) + """
CREATE TABLE "central_command" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "uid" VARCHAR(255) NOT NULL,
    "site_id" INTEGER NOT NULL REFERENCES "site" ("id") ON DELETE CASCADE,
    "action" VARCHAR(255) NOT NULL,
    "event_id" INTEGER REFERENCES "alarm_event" ("id") ON DELETE CASCADE,
    "alarm_id" INTEGER REFERENCES "alarm" ("id") ON DELETE CASCADE,
    "user_id" INTEGER REFERENCES "user" ("id") ON DELETE SET NULL,
    "body" TEXT NOT NULL,
    "state" VARCHAR(255) NOT NULL,
    "error" TEXT,
    "created_at" TEXT NOT NULL,
    "answered_at" TEXT
);
CREATE UNIQUE INDEX "central_command_uid" ON "central_command" ("uid");
CREATE INDEX "central_command_state" ON "central_command" ("state");
CREATE INDEX "central_command_event_id" ON "central_command" ("event_id");
CREATE INDEX "central_command_alarm_id" ON "central_command" ("alarm_id");
"""
