"""Numbered schema migrations, tracked in SQLite's ``PRAGMA user_version``.

Each migration is frozen SQL: it must create exactly what the models of its day described, whatever the models
say now, so that every database walks the same path. Add a migration for every model change; never edit one
that has shipped. A test compares the migrated schema with the models.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from vmond.store.schema_central import SCHEMA_15  # a central station's mirror (issue 18)
from vmond.store.schema_cluster import SCHEMA_16  # leases of several central nodes (issue 19)
from vmond.store.schema_commands import SCHEMA_14  # commands from a central station (issue 18)
from vmond.store.schema_notify import SCHEMA_13  # notifications (issue 17)
from vmond.store.schema_schedules import SCHEMA_12
from vmond.store.schema_supervision import SCHEMA_11
from vmond.util.kinds import event_kind

log = logging.getLogger(__name__)

SCHEMA_1 = """
CREATE TABLE "user" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "username" VARCHAR(255) NOT NULL,
    "password_hash" VARCHAR(255) NOT NULL,
    "role" VARCHAR(255) NOT NULL,
    "active" INTEGER NOT NULL,
    "created_at" TEXT NOT NULL
);
CREATE UNIQUE INDEX "user_username" ON "user" ("username");

CREATE TABLE "session" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "token_hash" VARCHAR(255) NOT NULL,
    "user_id" INTEGER NOT NULL,
    "kind" VARCHAR(255) NOT NULL,
    "csrf_token" VARCHAR(255),
    "created_at" TEXT NOT NULL,
    "expires_at" TEXT NOT NULL,
    "peer" VARCHAR(255),
    FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX "session_token_hash" ON "session" ("token_hash");
CREATE INDEX "session_user_id" ON "session" ("user_id");
CREATE INDEX "session_expires_at" ON "session" ("expires_at");

CREATE TABLE "account" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "name" VARCHAR(255) NOT NULL,
    "address" TEXT NOT NULL,
    "notes" TEXT NOT NULL,
    "armed" INTEGER NOT NULL,
    "from_config" INTEGER NOT NULL,
    "created_at" TEXT NOT NULL,
    "updated_at" TEXT NOT NULL
);

CREATE TABLE "contact" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "account_id" INTEGER NOT NULL,
    "name" VARCHAR(255) NOT NULL,
    "phone" VARCHAR(255),
    "email" VARCHAR(255),
    "role" VARCHAR(255),
    "priority" INTEGER NOT NULL,
    FOREIGN KEY ("account_id") REFERENCES "account" ("id") ON DELETE CASCADE
);
CREATE INDEX "contact_account_id" ON "contact" ("account_id");

CREATE TABLE "camera" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "account_id" INTEGER NOT NULL,
    "name" VARCHAR(255) NOT NULL,
    "smtp_local_part" VARCHAR(255) NOT NULL,
    "smtp_password_hash" VARCHAR(255),
    "rtsp_url" TEXT,
    "vendor_hint" VARCHAR(255),
    "active" INTEGER NOT NULL,
    "from_config" INTEGER NOT NULL,
    "created_at" TEXT NOT NULL,
    "last_mail_at" TEXT,
    "test_mail_at" TEXT,
    "last_refusal" TEXT,
    FOREIGN KEY ("account_id") REFERENCES "account" ("id") ON DELETE RESTRICT
);
CREATE INDEX "camera_account_id" ON "camera" ("account_id");
CREATE UNIQUE INDEX "camera_smtp_local_part" ON "camera" ("smtp_local_part");

CREATE TABLE "alarm_event" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "camera_id" INTEGER,
    "received_at" TEXT NOT NULL,
    "updated_at" TEXT NOT NULL,
    "event_time" TEXT NOT NULL,
    "event_type" VARCHAR(255) NOT NULL,
    "subject" TEXT NOT NULL,
    "body_excerpt" TEXT NOT NULL,
    "channel" VARCHAR(255),
    "vendor" VARCHAR(255),
    "status" VARCHAR(255) NOT NULL,
    "is_test" INTEGER NOT NULL,
    "flags" TEXT NOT NULL,
    "mail_count" INTEGER NOT NULL,
    "video_state" VARCHAR(255) NOT NULL,
    "status_changed_by_id" INTEGER,
    "status_changed_at" TEXT,
    FOREIGN KEY ("camera_id") REFERENCES "camera" ("id") ON DELETE RESTRICT,
    FOREIGN KEY ("status_changed_by_id") REFERENCES "user" ("id") ON DELETE SET NULL
);
CREATE INDEX "alarm_event_camera_id" ON "alarm_event" ("camera_id");
CREATE INDEX "alarm_event_received_at" ON "alarm_event" ("received_at");
CREATE INDEX "alarm_event_status" ON "alarm_event" ("status");
CREATE INDEX "alarm_event_status_changed_by_id" ON "alarm_event" ("status_changed_by_id");

CREATE TABLE "mail" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "ingest_key" VARCHAR(255) NOT NULL,
    "event_id" INTEGER NOT NULL,
    "received_at" TEXT NOT NULL,
    "peer" VARCHAR(255) NOT NULL,
    "mail_from" TEXT NOT NULL,
    "recipient" TEXT NOT NULL,
    "message_id" TEXT,
    "subject" TEXT NOT NULL,
    "size" INTEGER NOT NULL,
    "defects" TEXT NOT NULL,
    FOREIGN KEY ("event_id") REFERENCES "alarm_event" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX "mail_ingest_key" ON "mail" ("ingest_key");
CREATE INDEX "mail_event_id" ON "mail" ("event_id");

CREATE TABLE "media" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "event_id" INTEGER NOT NULL,
    "mail_id" INTEGER,
    "kind" VARCHAR(255) NOT NULL,
    "position" INTEGER NOT NULL,
    "path" TEXT NOT NULL,
    "thumb_path" TEXT,
    "content_type" VARCHAR(255) NOT NULL,
    "sha256" VARCHAR(255) NOT NULL,
    "width" INTEGER,
    "height" INTEGER,
    "bytes" INTEGER NOT NULL,
    "created_at" TEXT NOT NULL,
    FOREIGN KEY ("event_id") REFERENCES "alarm_event" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("mail_id") REFERENCES "mail" ("id") ON DELETE SET NULL
);
CREATE INDEX "media_event_id" ON "media" ("event_id");
CREATE INDEX "media_mail_id" ON "media" ("mail_id");

CREATE TABLE "alarm" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "event_id" INTEGER NOT NULL,
    "opened_by_id" INTEGER,
    "opened_at" TEXT NOT NULL,
    "state" VARCHAR(255) NOT NULL,
    "resolved_by_id" INTEGER,
    "resolved_at" TEXT,
    "resolution" TEXT,
    FOREIGN KEY ("event_id") REFERENCES "alarm_event" ("id") ON DELETE RESTRICT,
    FOREIGN KEY ("opened_by_id") REFERENCES "user" ("id") ON DELETE SET NULL,
    FOREIGN KEY ("resolved_by_id") REFERENCES "user" ("id") ON DELETE SET NULL
);
CREATE UNIQUE INDEX "alarm_event_id" ON "alarm" ("event_id");
CREATE INDEX "alarm_opened_by_id" ON "alarm" ("opened_by_id");
CREATE INDEX "alarm_state" ON "alarm" ("state");
CREATE INDEX "alarm_resolved_by_id" ON "alarm" ("resolved_by_id");

CREATE TABLE "alarm_note" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "alarm_id" INTEGER NOT NULL,
    "author_id" INTEGER,
    "created_at" TEXT NOT NULL,
    "text" TEXT NOT NULL,
    FOREIGN KEY ("alarm_id") REFERENCES "alarm" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("author_id") REFERENCES "user" ("id") ON DELETE SET NULL
);
CREATE INDEX "alarm_note_alarm_id" ON "alarm_note" ("alarm_id");
CREATE INDEX "alarm_note_author_id" ON "alarm_note" ("author_id");

CREATE TABLE "audit_entry" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "at" TEXT NOT NULL,
    "user_id" INTEGER,
    "action" VARCHAR(255) NOT NULL,
    "target_type" VARCHAR(255) NOT NULL,
    "target_id" INTEGER,
    "detail" TEXT NOT NULL,
    FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE SET NULL
);
CREATE INDEX "audit_entry_at" ON "audit_entry" ("at");
CREATE INDEX "audit_entry_user_id" ON "audit_entry" ("user_id");

CREATE TABLE "outbox_message" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "topic" TEXT NOT NULL,
    "payload" BLOB NOT NULL,
    "qos" INTEGER NOT NULL,
    "retain" INTEGER NOT NULL,
    "created_at" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL
);

CREATE TABLE "smtp_refusal" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "at" TEXT NOT NULL,
    "peer" VARCHAR(255) NOT NULL,
    "mail_from" TEXT NOT NULL,
    "recipient" TEXT NOT NULL,
    "reply" TEXT NOT NULL
);
CREATE INDEX "smtp_refusal_at" ON "smtp_refusal" ("at");

"""


# 2: installer diagnostics per camera, and the name an attachment had in the mail (escaped metadata only).
SCHEMA_2 = """
ALTER TABLE "camera" ADD COLUMN "last_peer" VARCHAR(255);
ALTER TABLE "camera" ADD COLUMN "last_transcript" TEXT;
ALTER TABLE "media" ADD COLUMN "original_name" TEXT;
"""


# 3: the alarm workflow: who acknowledged (is handling) an alarm, and a resolution code beside the text.
SCHEMA_3 = """
ALTER TABLE "alarm" ADD COLUMN "acknowledged_by_id" INTEGER REFERENCES "user" ("id") ON DELETE SET NULL;
ALTER TABLE "alarm" ADD COLUMN "acknowledged_at" TEXT;
ALTER TABLE "alarm" ADD COLUMN "resolution_code" VARCHAR(255);
CREATE INDEX "alarm_opened_at" ON "alarm" ("opened_at");
CREATE INDEX "audit_entry_target" ON "audit_entry" ("target_type", "target_id");
"""


# 4: which event an MQTT message reports, so that retention never removes what a central station has not got yet.
SCHEMA_4 = """
ALTER TABLE "outbox_message" ADD COLUMN "event_id" INTEGER;
CREATE INDEX "outbox_message_event_id" ON "outbox_message" ("event_id");
"""


# 5: a camera that did not get its 250 (power cut, timeout) sends the same mail again: find it by content.
SCHEMA_5 = """
ALTER TABLE "mail" ADD COLUMN "sha256" VARCHAR(64);
CREATE INDEX "mail_sha256" ON "mail" ("sha256");
"""


# 6: the camera's own name from the mail, beside its channel: an NVR mails for all its cameras from one address.
SCHEMA_6 = """
ALTER TABLE "alarm_event" ADD COLUMN "camera_name" VARCHAR(255);
"""


# 7: whether the configuration file gives a camera its SMTP password (the password itself stays in the file).
SCHEMA_7 = """
ALTER TABLE "camera" ADD COLUMN "smtp_password_in_config" INTEGER NOT NULL DEFAULT 0;
"""


# 8: the wall's queue: each event's kind (from its event type or subject, as vmond.util.kinds reads them) and
# priority (the defaults of its day), and an account's own priorities from the configuration.
SCHEMA_8 = """
ALTER TABLE "alarm_event" ADD COLUMN "kind" VARCHAR(255) NOT NULL DEFAULT 'other';
ALTER TABLE "alarm_event" ADD COLUMN "priority" INTEGER NOT NULL DEFAULT 3;
ALTER TABLE "account" ADD COLUMN "priorities" TEXT;
CREATE INDEX "alarm_event_queue" ON "alarm_event" ("status", "priority", "received_at");
UPDATE "alarm_event" SET "kind" = vmond_event_kind("event_type", "subject");
UPDATE "alarm_event" SET "priority" = CASE "kind" WHEN 'intrusion' THEN 1 WHEN 'person' THEN 1 WHEN 'tamper' THEN 1
    WHEN 'motion' THEN 3 WHEN 'other' THEN 3 ELSE 2 END;
"""


def _schema_8(conn: sqlite3.Connection) -> None:
    conn.create_function("vmond_event_kind", 2, event_kind, deterministic=True)
    _apply_script(conn, SCHEMA_8)


# 9: action plans: the steps an account's alarms are worked through, and each alarm's own copy with who ticked what.
SCHEMA_9 = """
ALTER TABLE "account" ADD COLUMN "action_plan" TEXT NOT NULL DEFAULT '[]';
ALTER TABLE "alarm" ADD COLUMN "steps" TEXT NOT NULL DEFAULT '[]';
"""


# 10: guards limited to accounts. A link table rather than a list in a column: the database keeps every id a real
# account, an account cannot be deleted while a user is limited to it, and the filters are plain joins.
SCHEMA_10 = """
CREATE TABLE "user_account" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "user_id" INTEGER NOT NULL,
    "account_id" INTEGER NOT NULL,
    FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("account_id") REFERENCES "account" ("id") ON DELETE RESTRICT
);
CREATE UNIQUE INDEX "user_account_user_id_account_id" ON "user_account" ("user_id", "account_id");
CREATE INDEX "user_account_account_id" ON "user_account" ("account_id");
"""


def _apply_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would commit on its own; run statement by statement inside our transaction instead.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    lambda conn: _apply_script(conn, SCHEMA_1),
    lambda conn: _apply_script(conn, SCHEMA_2),
    lambda conn: _apply_script(conn, SCHEMA_3),
    lambda conn: _apply_script(conn, SCHEMA_4),
    lambda conn: _apply_script(conn, SCHEMA_5),
    lambda conn: _apply_script(conn, SCHEMA_6),
    lambda conn: _apply_script(conn, SCHEMA_7),
    _schema_8,
    lambda conn: _apply_script(conn, SCHEMA_9),
    lambda conn: _apply_script(conn, SCHEMA_10),
    lambda conn: _apply_script(conn, SCHEMA_11),  # supervision (vmond.store.schema_supervision)
    lambda conn: _apply_script(conn, SCHEMA_12),  # schedules and snooze (issue 17)
    lambda conn: _apply_script(conn, SCHEMA_13),  # notifications (issue 17)
    lambda conn: _apply_script(conn, SCHEMA_14),  # commands from a central station (issue 18)
    lambda conn: _apply_script(conn, SCHEMA_15),  # a central station's mirror of its sites (issue 18)
    lambda conn: _apply_script(conn, SCHEMA_16),  # leases of several central nodes (issue 19); portable SQL
]
LATEST = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, db_path: Path | None) -> int:
    """Bring the database to :data:`LATEST`, one transaction per step; returns the version it started at.

    An existing database is copied next to itself (``<name>.v<N>.bak``) before its first migration, so an
    installer can roll back a failed upgrade.
    """
    start = schema_version(conn)
    if start > LATEST:
        raise RuntimeError(
            f"database schema version {start} is newer than this vmond understands ({LATEST}); "
            "refusing to touch it (was vmond downgraded?)"
        )
    if 0 < start < LATEST and db_path is not None:
        backup = db_path.with_name(f"{db_path.name}.v{start}.bak")
        log.warning("migrating database from schema %d to %d; backup in %s", start, LATEST, backup)
        with sqlite3.connect(backup) as copy:
            conn.backup(copy)
        copy.close()
    for version in range(start, LATEST):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            # PRAGMA does not take parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("database schema now at version %d", version + 1)
    return start
