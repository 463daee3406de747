"""Migration 11, supervision: the schema SQL (frozen, like every migration's; applied by
:mod:`vmond.store.migrations`).

A camera's own ``max_silence`` (seconds; NULL: ``supervision.max_silence``; 0: never supervised) and the moment
supervision began for it (``supervised_since``: what a camera that never mailed is counted from). The
``supervision_condition`` table holds each supervised condition that is present now (a silent camera, the disk
running low, ...) with the event raised for it: its unique ``subject`` keeps it to one open event per camera or
per appliance condition, and the row's presence is what survives a restart.
"""

from __future__ import annotations

SCHEMA_11 = """
ALTER TABLE "camera" ADD COLUMN "max_silence" REAL;
ALTER TABLE "camera" ADD COLUMN "supervised_since" TEXT;
CREATE TABLE "supervision_condition" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "subject" VARCHAR(255) NOT NULL,
    "kind" VARCHAR(255) NOT NULL,
    "camera_id" INTEGER,
    "event_id" INTEGER NOT NULL,
    "since" TEXT NOT NULL,
    FOREIGN KEY ("camera_id") REFERENCES "camera" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("event_id") REFERENCES "alarm_event" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX "supervision_condition_subject" ON "supervision_condition" ("subject");
CREATE INDEX "supervision_condition_camera_id" ON "supervision_condition" ("camera_id");
CREATE INDEX "supervision_condition_event_id" ON "supervision_condition" ("event_id");
"""
