"""Migration 12, schedules and snooze (issue 17): frozen SQL, as :mod:`vmond.store.migrations` explains.

An account keeps its schedule from the configuration (JSON, NULL: monitored around the clock) and a supervisor's
manual arm or disarm (``override_monitored`` NULL: none) with its end and reason; a camera its snooze's end and
reason. An event recorded while its account was not monitored or its camera snoozed is kept off the wall: the
``off_wall`` column, in an index with the queue's order, so that the wall's query stays an index walk instead of
a search through each event's JSON flags.
"""

from __future__ import annotations

SCHEMA_12 = """
ALTER TABLE "account" ADD COLUMN "schedule" TEXT;
ALTER TABLE "account" ADD COLUMN "override_monitored" INTEGER;
ALTER TABLE "account" ADD COLUMN "override_until" TEXT;
ALTER TABLE "account" ADD COLUMN "override_reason" TEXT NOT NULL DEFAULT '';
ALTER TABLE "account" ADD COLUMN "override_by_id" INTEGER REFERENCES "user" ("id") ON DELETE SET NULL;
ALTER TABLE "camera" ADD COLUMN "snoozed_until" TEXT;
ALTER TABLE "camera" ADD COLUMN "snooze_reason" TEXT NOT NULL DEFAULT '';
ALTER TABLE "camera" ADD COLUMN "snoozed_by_id" INTEGER REFERENCES "user" ("id") ON DELETE SET NULL;
ALTER TABLE "alarm_event" ADD COLUMN "off_wall" INTEGER NOT NULL DEFAULT 0;
CREATE INDEX "alarm_event_wall" ON "alarm_event" ("status", "off_wall", "priority", "received_at");
CREATE INDEX "camera_snoozed_until" ON "camera" ("snoozed_until");
"""
