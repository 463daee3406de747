"""The data model: peewee models for users, accounts, cameras, events, media, alarms and the MQTT outbox.

The models are not bound to a database here: :class:`vmond.store.db.Database` binds them when it opens the file.
The schema itself is created by the numbered migrations in :mod:`vmond.store.migrations`, never by
``create_tables``, so that an old database is always brought forward the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import peewee as pw

from vmond.util.clock import utcnow as utcnow  # the store's modules take the clock from here

_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class UtcDateTimeField(pw.TextField):
    """A point in time stored as fixed-width ISO 8601 UTC text, so that text order is time order."""

    field_type = "TEXT"

    def db_value(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC field")
        return value.astimezone(UTC).strftime(_UTC_FORMAT)

    def python_value(self, value: str | None) -> datetime | None:
        if value is None:
            return None
        if len(value) == 27 and value[-1] == "Z":  # what db_value writes: fromisoformat is ten times strptime's speed
            return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
        return datetime.strptime(value, _UTC_FORMAT).replace(tzinfo=UTC)


class JSONField(pw.TextField):
    """JSON text; playhouse's JSON fields differ between peewee 3.14 and 4, so keep our own."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    # Annotations for the type checker (a bare annotation adds nothing at run time): peewee's metaclass adds this
    # primary key, and for each foreign key `<name>_id`, the key alone (on the class, the field itself).
    id: pw.AutoField[int]

    class Meta:
        legacy_table_names = False


class User(BaseModel):
    username = pw.CharField(unique=True)
    password_hash = pw.CharField()
    role = pw.CharField()  # admin | supervisor | guard
    active = pw.BooleanField(default=True)
    created_at = UtcDateTimeField(default=utcnow)


class Session(BaseModel):
    token_hash = pw.CharField(unique=True)
    user = pw.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    user_id: pw.ForeignKeyField[int]
    kind = pw.CharField()  # web | api
    csrf_token = pw.CharField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    expires_at = UtcDateTimeField(index=True)
    peer = pw.CharField(null=True)


class Site(BaseModel):
    """On a central station, one appliance it mirrors (migration 15, :mod:`vmond.store.schema_central`)."""

    key = pw.CharField(unique=True)  # the site's id, as in its topics
    name = pw.CharField()
    timezone = pw.CharField(null=True)
    version = pw.CharField(null=True)
    online = pw.BooleanField(null=True)  # its `available` topic; None: never heard
    last_message_at = UtcDateTimeField(null=True)
    heartbeat_at = UtcDateTimeField(null=True)
    status = JSONField(default=dict)  # its last status message
    config_at = UtcDateTimeField(null=True)  # when its config message was last mirrored
    created_at = UtcDateTimeField(default=utcnow)


class Mirrored(BaseModel):
    """A row that, on a central, mirrors one of a site's rows: ``site`` and the id it has there (None on an
    appliance)."""

    site = pw.ForeignKeyField(Site, null=True, on_delete="CASCADE", backref="+")
    site_id: pw.ForeignKeyField[int | None]
    remote_id = pw.IntegerField(null=True)

    class Meta:
        indexes = ((("site", "remote_id"), True),)


class Account(Mirrored):
    name = pw.CharField()
    address = pw.TextField(default="")
    notes = pw.TextField(default="")
    armed = pw.BooleanField(default=True)
    from_config = pw.BooleanField(default=False)  # declared in the YAML: read-only in the UI
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)
    action_plan = JSONField(default=list)  # [{"text", "kinds": [...]}], in order (vmond.store.actionplans)
    priorities = JSONField(null=True)  # {kind: priority} over events.priorities (migration 8)
    # Schedules (migration 12): the configuration's schedule (vmond.util.schedule JSON; None: around the clock)
    # and a supervisor's manual arm (True) or disarm (False) with its end (None: until changed by hand).
    schedule = JSONField(null=True)
    override_monitored = pw.BooleanField(null=True)
    override_until = UtcDateTimeField(null=True)
    override_reason = pw.TextField(default="")
    override_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+", index=False)
    override_by_id: pw.ForeignKeyField[int | None]


class Contact(BaseModel):
    account = pw.ForeignKeyField(Account, backref="contacts", on_delete="CASCADE")
    account_id: pw.ForeignKeyField[int]
    name = pw.CharField()
    phone = pw.CharField(null=True)
    email = pw.CharField(null=True)
    role = pw.CharField(null=True)
    priority = pw.IntegerField(default=1)
    notify_url = pw.TextField(null=True)  # an Apprise URL (a secret): this contact's notifications (migration 13)


class Camera(Mirrored):
    account = pw.ForeignKeyField(Account, backref="cameras", on_delete="RESTRICT")
    account_id: pw.ForeignKeyField[int]
    name = pw.CharField()
    smtp_local_part = pw.CharField(unique=True)
    smtp_password_hash = pw.CharField(null=True)  # set in the dashboard
    smtp_password_in_config = pw.BooleanField(default=False)  # the YAML declares one (kept there, not here)
    rtsp_url = pw.TextField(null=True)
    vendor_hint = pw.CharField(null=True)
    active = pw.BooleanField(default=True)  # retired cameras keep their events but refuse mail
    from_config = pw.BooleanField(default=False)
    created_at = UtcDateTimeField(default=utcnow)
    last_mail_at = UtcDateTimeField(null=True)
    test_mail_at = UtcDateTimeField(null=True)
    last_refusal = JSONField(null=True)  # {"at", "peer", "command", "reply"} of the last 4xx/5xx it got
    last_peer = pw.CharField(null=True)  # where its last mail came from
    last_transcript = JSONField(null=True)  # the last SMTP session that named it, secrets removed
    # Supervision (migration 11): its own max_silence in seconds (None: supervision.max_silence; 0: never), and
    # since when it is supervised (a camera that never mailed is counted from then).
    max_silence = pw.FloatField(null=True)
    supervised_since = UtcDateTimeField(null=True)
    # Snooze (migration 12): its events are kept off the wall until then.
    snoozed_until = UtcDateTimeField(null=True, index=True)
    snooze_reason = pw.TextField(default="")
    snoozed_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+", index=False)
    snoozed_by_id: pw.ForeignKeyField[int | None]


class AlarmEvent(Mirrored):
    camera = pw.ForeignKeyField(Camera, backref="events", null=True, on_delete="RESTRICT")
    camera_id: pw.ForeignKeyField[int | None]
    received_at = UtcDateTimeField(index=True)
    updated_at = UtcDateTimeField()
    event_time = UtcDateTimeField()
    event_type = pw.CharField()
    subject = pw.TextField(default="")
    body_excerpt = pw.TextField(default="")
    channel = pw.CharField(null=True)
    camera_name = pw.CharField(null=True)  # the camera's own name from the mail (an NVR mails for all channels)
    vendor = pw.CharField(null=True)
    status = pw.CharField(default="active", index=True)  # active | dismissed | alarmed
    is_test = pw.BooleanField(default=False)
    flags = JSONField(default=list)
    mail_count = pw.IntegerField(default=1)
    video_state = pw.CharField(default="none")  # none | pending | ready | failed
    status_changed_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    status_changed_by_id: pw.ForeignKeyField[int | None]
    status_changed_at = UtcDateTimeField(null=True)
    # The wall's queue (migration 8): what it is, normalised (vmond.util.kinds), and how urgent, 1 most.
    kind = pw.CharField(default="other")
    priority = pw.IntegerField(default=3)
    # Schedules and snooze (migration 12): flagged unmonitored or snoozed, so not on the wall (indexed for its query).
    off_wall = pw.BooleanField(default=False)


class Mail(BaseModel):
    """One accepted message for one recipient camera; ``ingest_key`` makes replaying the spool idempotent."""

    ingest_key = pw.CharField(unique=True)
    event = pw.ForeignKeyField(AlarmEvent, backref="mails", on_delete="CASCADE")
    event_id: pw.ForeignKeyField[int]
    received_at = UtcDateTimeField()
    peer = pw.CharField(default="")
    mail_from = pw.TextField(default="")
    recipient = pw.TextField(default="")
    message_id = pw.TextField(null=True)
    subject = pw.TextField(default="")
    size = pw.IntegerField(default=0)
    defects = JSONField(default=list)
    sha256 = pw.CharField(null=True, index=True)  # of the message as received: recognises a camera's resend


class Media(Mirrored):
    event = pw.ForeignKeyField(AlarmEvent, backref="media", on_delete="CASCADE")
    event_id: pw.ForeignKeyField[int]
    mail = pw.ForeignKeyField(Mail, null=True, on_delete="SET NULL")
    mail_id: pw.ForeignKeyField[int | None]
    kind = pw.CharField()  # image | video | attachment (kept opaque) | raw (a mail that could not be parsed)
    position = pw.IntegerField(default=0)
    path = pw.TextField()  # relative to the media directory
    thumb_path = pw.TextField(null=True)
    content_type = pw.CharField()
    sha256 = pw.CharField()
    width = pw.IntegerField(null=True)
    height = pw.IntegerField(null=True)
    bytes = pw.IntegerField()
    created_at = UtcDateTimeField(default=utcnow)
    original_name = pw.TextField(null=True)  # as the mail named it, cleaned; never used as a path


class Alarm(Mirrored):
    event = pw.ForeignKeyField(AlarmEvent, backref="alarms", unique=True, on_delete="RESTRICT")
    event_id: pw.ForeignKeyField[int]
    opened_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    opened_by_id: pw.ForeignKeyField[int | None]
    opened_at = UtcDateTimeField(default=utcnow)
    state = pw.CharField(default="open", index=True)  # open | acknowledged | resolved
    resolved_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    resolved_by_id: pw.ForeignKeyField[int | None]
    resolved_at = UtcDateTimeField(null=True)
    resolution = pw.TextField(null=True)
    acknowledged_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")  # handling it
    acknowledged_by_id: pw.ForeignKeyField[int | None]
    acknowledged_at = UtcDateTimeField(null=True)
    resolution_code = pw.CharField(null=True)
    # The account's action plan as it was when the alarm was raised: [{"n", "text", "done_by" (user id), "done_at"}]
    steps = JSONField(default=list)
    # Who of a central station opened, handled or resolved it (no local user then): {"opened": "<user> at <central>"}
    remote_by = JSONField(default=dict)


class AlarmNote(BaseModel):
    alarm = pw.ForeignKeyField(Alarm, backref="notes", on_delete="CASCADE")
    alarm_id: pw.ForeignKeyField[int]
    author = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    author_id: pw.ForeignKeyField[int | None]
    created_at = UtcDateTimeField(default=utcnow)
    text = pw.TextField()


class AuditEntry(BaseModel):
    at = UtcDateTimeField(default=utcnow, index=True)
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    user_id: pw.ForeignKeyField[int | None]
    action = pw.CharField()
    target_type = pw.CharField()
    target_id = pw.IntegerField(null=True)
    detail = JSONField(default=dict)


class OutboxMessage(BaseModel):
    topic = pw.TextField()
    payload = pw.BlobField()
    qos = pw.IntegerField(default=1)
    retain = pw.BooleanField(default=False)
    created_at = UtcDateTimeField(default=utcnow)
    attempts = pw.IntegerField(default=0)
    event_id = pw.IntegerField(null=True, index=True)  # the event it reports (retention waits for delivery)


class SmtpRefusal(BaseModel):
    at = UtcDateTimeField(default=utcnow, index=True)
    peer = pw.CharField(default="")
    mail_from = pw.TextField(default="")
    recipient = pw.TextField(default="")
    reply = pw.TextField()


class UserAccount(BaseModel):
    """Guards limited to accounts: a user with rows here sees only these accounts; a user with none sees all."""

    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    user_id: pw.ForeignKeyField[int]
    # RESTRICT: an account cannot vanish from under a limited user (who would then see every account).
    account = pw.ForeignKeyField(Account, on_delete="RESTRICT")
    account_id: pw.ForeignKeyField[int]

    class Meta:
        indexes = ((("user", "account"), True),)


class SupervisionCondition(BaseModel):
    """Supervision (migration 11): a supervised condition present now (a silent camera, the disk running low ...)
    and the event raised for it; ``subject`` ("camera:7", "disk_low") keeps it to one open event each."""

    subject = pw.CharField(unique=True)
    kind = pw.CharField()
    camera = pw.ForeignKeyField(Camera, null=True, on_delete="CASCADE", backref="+")
    camera_id: pw.ForeignKeyField[int | None]
    event = pw.ForeignKeyField(AlarmEvent, on_delete="CASCADE", backref="+")
    event_id: pw.ForeignKeyField[int]
    since = UtcDateTimeField()
class Notification(BaseModel):
    """One message to one recipient (issue 17, migration 13; see vmond.store.notifications)."""

    uid = pw.CharField(unique=True)  # the stable id the message carries, the same on every retry
    event = pw.ForeignKeyField(AlarmEvent, on_delete="CASCADE", backref="+")
    event_id: pw.ForeignKeyField[int]
    alarm = pw.ForeignKeyField(Alarm, null=True, on_delete="SET NULL", backref="+")
    alarm_id: pw.ForeignKeyField[int | None]
    rule = pw.CharField()  # alarm_raised | unhandled | supervision
    target = pw.CharField()  # a notify.targets name, or "contact <name>"
    url = pw.TextField(null=True)  # a contact's URL as it was; None: the target's, from the configuration
    title = pw.TextField()
    body = pw.TextField()
    state = pw.CharField(default="pending")  # pending | sent | failed | grouped (told in another row's message)
    attempts = pw.IntegerField(default=0)
    next_at = UtcDateTimeField(default=utcnow)
    created_at = UtcDateTimeField(default=utcnow)
    sent_at = UtcDateTimeField(null=True)
    last_error = pw.TextField(null=True)


class RemoteCommand(BaseModel):
    """A command id from a central station, answered once (migration 14, :mod:`vmond.store.commands`)."""

    command_id = pw.CharField(unique=True)
    received_at = UtcDateTimeField(default=utcnow, index=True)
    result = pw.TextField()  # the JSON result first answered, sent again for a repeated id


class CentralCommand(BaseModel):
    """On a central, an operator's action sent to a site as a command (migration 15)."""

    uid = pw.CharField(unique=True)  # the command's id
    site = pw.ForeignKeyField(Site, on_delete="CASCADE", backref="+")
    site_id: pw.ForeignKeyField[int]
    action = pw.CharField()
    event = pw.ForeignKeyField(AlarmEvent, null=True, on_delete="CASCADE", backref="+")
    event_id: pw.ForeignKeyField[int | None]
    alarm = pw.ForeignKeyField(Alarm, null=True, on_delete="CASCADE", backref="+")
    alarm_id: pw.ForeignKeyField[int | None]
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    user_id: pw.ForeignKeyField[int | None]
    body = JSONField()  # the command as sent
    state = pw.CharField(default="pending", index=True)  # pending | done | refused
    error = pw.TextField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    answered_at = UtcDateTimeField(null=True)


class Lease(BaseModel):
    """Something one central node holds at a time, until ``expires_at`` by the database's clock (migration 16)."""

    name = pw.TextField(primary_key=True)  # node:<name> | duty:<what> | adopt:<name>
    holder = pw.TextField()  # central.node
    expires_at = UtcDateTimeField()
    taken_at = UtcDateTimeField()  # when this holder took it (kept while renewed)


MODELS: tuple[type[BaseModel], ...] = (
    Site,
    User,
    Session,
    Account,
    Contact,
    Camera,
    AlarmEvent,
    Mail,
    Media,
    Alarm,
    AlarmNote,
    AuditEntry,
    OutboxMessage,
    SmtpRefusal,
    UserAccount,
    SupervisionCondition,
    Notification,
    RemoteCommand,
    CentralCommand,
    Lease,
)
