"""Migration 13's schema: notifications (issue 17).

One row per message to one recipient, written in the same transaction as the change that causes it (an alarm
raised, a supervision event, an event left unhandled), so a committed change is never without its notification.
``url`` holds a contact's Apprise URL as it was then (contacts are rewritten from the YAML at every start); a
``notify.targets`` entry is looked up by ``target`` name when sending, so its URL lives only in the configuration.
"""

from __future__ import annotations

SCHEMA_13 = """
CREATE TABLE "notification" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "uid" TEXT NOT NULL,
    "event_id" INTEGER NOT NULL,
    "alarm_id" INTEGER,
    "rule" TEXT NOT NULL,
    "target" TEXT NOT NULL,
    "url" TEXT,
    "title" TEXT NOT NULL,
    "body" TEXT NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_at" TEXT NOT NULL,
    "created_at" TEXT NOT NULL,
    "sent_at" TEXT,
    "last_error" TEXT,
    FOREIGN KEY ("event_id") REFERENCES "alarm_event" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("alarm_id") REFERENCES "alarm" ("id") ON DELETE SET NULL
);
CREATE UNIQUE INDEX "notification_uid" ON "notification" ("uid");
CREATE INDEX "notification_state_next_at" ON "notification" ("state", "next_at");
CREATE INDEX "notification_event_id_rule" ON "notification" ("event_id", "rule");
CREATE INDEX "notification_alarm_id" ON "notification" ("alarm_id");
ALTER TABLE "contact" ADD COLUMN "notify_url" TEXT;
"""
