"""A central station's mirror of its sites (issue 18): a site's messages become ordinary rows keyed by site.

Each function takes one message as the site published it (the formats are in schema/mqtt-messages.json) and
brings the mirror up to it in the caller's transaction: accounts with contacts and cameras from the retained
``config``, events from ``events``, alarms (with their notes, steps and who did what) from ``alarms``. A row is
found by ``(site, remote_id)``, so a message delivered twice changes nothing the second time; an event or alarm
message older than the row (``updated_at``) is ignored. Rows the site names before its config arrived (an event's
camera) are created from what the message says and completed by the config.

Mirrored changes are announced to the central's dashboards like local ones, but never queued to MQTT again.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, NamedTuple

from vmond.store.alarms import alarm_summary
from vmond.store.centralcommands import record_result
from vmond.store.changes import Change
from vmond.store.events import get_event
from vmond.store.models import Account, Alarm, AlarmEvent, AlarmNote, AuditEntry, Camera, Contact, Media, Site
from vmond.store.monitoring import OFF_WALL_FLAGS
from vmond.store.sites import announce_site, ensure_site, note_available, note_message, note_status, parse_time
from vmond.util.schedule import Schedule

log = logging.getLogger(__name__)

MAX_TEXT = 10_000  # a mirrored note or text longer than this is cut (a site's message is not trusted blindly)
_MEDIA_URL = re.compile(r"/media/(\d+)$")


class BadMessage(ValueError):
    """A site's message lacks what the mirror needs; it is logged and dropped (never retried forever)."""


def _text(value: object, default: str = "", limit: int = MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else default


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _remote_id(item: object, what: str) -> int:
    if not isinstance(item, dict) or (remote := _int(item.get("id"))) is None:
        raise BadMessage(f"{what} without an id")
    return remote


def _mirrored(model: type[Any], site: Site, remote: int) -> Any:
    return model.get_or_none((model.site == site) & (model.remote_id == remote))


# --- config: accounts, contacts, cameras ----------------------------------------------------------------------


def _account(site: Site, remote: int, name: str) -> Account:
    account = _mirrored(Account, site, remote)
    if account is None:
        account = Account.create(site=site, remote_id=remote, name=name or f"account {remote}")
    return account


def _camera(site: Site, remote: int, name: str, account: Account) -> Camera:
    camera = _mirrored(Camera, site, remote)
    if camera is None:
        # No SMTP door on a central: the local part only has to be unique, and names the site's camera.
        camera = Camera.create(site=site, remote_id=remote, name=name or f"camera {remote}", account=account,
                               smtp_local_part=f"{site.key}~{remote}")
    return camera


def mirror_config(key: str, doc: dict[str, Any], at: datetime, name: str | None = None,
                  change: Change | None = None) -> Site:
    """The site's retained config: its name and zone, accounts (contacts, action plan, schedule, manual arm)
    and cameras. Accounts and cameras it no longer lists stay (their events keep them); cameras go inactive."""
    announced = _obj(doc.get("site"))
    site = ensure_site(key, name or _text(announced.get("name"), limit=200) or None)
    site.timezone = _text(announced.get("timezone"), limit=100) or site.timezone
    site.version = _text(doc.get("version"), limit=100) or site.version
    site.config_at = site.last_message_at = at
    site.save()
    accounts: dict[int, Account] = {}
    for item in doc.get("accounts") or []:
        accounts[_remote_id(item, "an account")] = _mirror_account(site, item)
    listed = set()
    for item in doc.get("cameras") or []:
        remote = _remote_id(item, "a camera")
        account = accounts.get(_int(item.get("account_id")) or -1)
        if account is None:
            log.warning("site %s: camera %d names an account the config does not list; skipped", key, remote)
            continue
        listed.add(remote)
        camera = _camera(site, remote, _text(item.get("name"), limit=200), account)
        camera.name = _text(item.get("name"), camera.name, 200)
        camera.account = account
        camera.active = bool(item.get("active", True))
        camera.max_silence = item.get("max_silence") if isinstance(item.get("max_silence"), (int, float)) else None
        camera.snoozed_until = parse_time(item.get("snoozed_until"))
        camera.save()
    (Camera.update(active=False)
     .where((Camera.site == site) & Camera.remote_id.not_in(listed or {-1})).execute())
    if change is not None:
        change.announce("site.config", {"id": site.key, "name": site.name}, about=("site-config", site.id))
    return site


def _mirror_account(site: Site, item: dict[str, Any]) -> Account:
    account = _account(site, item["id"], _text(item.get("name"), limit=200))
    account.name = _text(item.get("name"), account.name, 200)
    account.address = _text(item.get("address"), "", 2000)
    account.notes = _text(item.get("notes"), "", MAX_TEXT)
    plan = item.get("action_plan")
    account.action_plan = [{"text": _text(s.get("text"), limit=2000), "kinds": list(s.get("kinds") or [])}
                           for s in plan if isinstance(s, dict)] if isinstance(plan, list) else []
    account.schedule = _schedule(item.get("schedule"))
    manual = _obj(_obj(item.get("monitoring")).get("manual"))
    account.override_monitored = bool(manual["monitored"]) if "monitored" in manual else None
    account.override_until = parse_time(manual.get("until"))
    account.override_reason = _text(manual.get("reason"), "", 2000)
    account.save()
    Contact.delete().where(Contact.account == account).execute()
    for n, contact in enumerate(c for c in item.get("contacts") or [] if isinstance(c, dict)):
        Contact.create(account=account, name=_text(contact.get("name"), "?", 200),
                       phone=_text(contact.get("phone"), limit=100) or None,
                       email=_text(contact.get("email"), limit=200) or None,
                       role=_text(contact.get("role"), limit=200) or None,
                       priority=_int(contact.get("priority")) or n + 1)
    return account


def _schedule(value: object) -> Any:
    """The schedule as the site stores it, if it reads as one (the central shows it, the site applies it)."""
    if not isinstance(value, dict):
        return None
    try:
        Schedule.from_json(value)
    except (KeyError, TypeError, ValueError):
        return None
    return value


# --- events ---------------------------------------------------------------------------------------------------


def mirror_event(key: str, event: dict[str, Any], at: datetime, domain: str, name: str | None = None,
                 change: Change | None = None) -> int | None:
    """An ``events`` message's Event: created or brought up to date; returns the local event id (None: an older
    copy, ignored)."""
    site = ensure_site(key, name)
    site.last_message_at = at
    site.save()
    remote = _remote_id(event, "an event")
    updated = parse_time(event.get("updated_at")) or parse_time(event.get("received_at")) or at
    row = _mirrored(AlarmEvent, site, remote)
    if row is not None and row.updated_at > updated:
        return None  # a redelivered older copy
    account_ref = event.get("account") if isinstance(event.get("account"), dict) else None
    camera_ref = event.get("camera") if isinstance(event.get("camera"), dict) else None
    camera = None
    if account_ref is not None and camera_ref is not None:
        account = _account(site, _remote_id(account_ref, "an event's account"),
                           _text(account_ref.get("name"), limit=200))
        camera = _camera(site, _remote_id(camera_ref, "an event's camera"), _text(camera_ref.get("name"), limit=200),
                         account)
    received = parse_time(event.get("received_at")) or at
    flags = [f for f in event.get("flags") or [] if isinstance(f, str)][:20]
    fields = {
        "camera": camera, "received_at": received, "updated_at": updated,
        "event_time": parse_time(event.get("event_time")) or received,
        "event_type": _text(event.get("event_type"), "event", 200), "subject": _text(event.get("subject")),
        "channel": _text(event.get("channel"), limit=200) or None,
        "camera_name": _text(event.get("camera_name"), limit=200) or None,
        "vendor": _text(event.get("vendor"), limit=100) or None,
        "status": event.get("status") if event.get("status") in ("active", "dismissed", "alarmed") else "active",
        "kind": _text(event.get("kind"), "other", 50), "priority": min(5, max(1, _int(event.get("priority")) or 3)),
        "is_test": bool(event.get("is_test")), "flags": flags, "mail_count": _int(event.get("mail_count")) or 1,
        "video_state": _text((event.get("video") or {}).get("state"), "none", 20),
        "off_wall": any(flag in OFF_WALL_FLAGS for flag in flags),
    }
    created = row is None
    if created:
        row = AlarmEvent.create(site=site, remote_id=remote, **fields)
    else:
        for field, value in fields.items():
            setattr(row, field, value)
        row.save()
    _mirror_media(site, row, event)
    if change is not None:
        data = get_event(domain, row.id)
        change.announce("event.created" if created else "event.updated", data, about=("event", row.id))
    return int(row.id)


def _media_items(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's media as the site lists them: pictures, the clip once ready, attachments."""
    images = [i for i in event.get("images") or [] if isinstance(i, dict)]
    items = [{**i, "kind": "image", "content_type": _text(i.get("content_type"), "image/jpeg", 100)} for i in images]
    video = _obj(event.get("video"))
    found = _MEDIA_URL.search(video["url"]) if isinstance(video.get("url"), str) else None
    if _int(video.get("id")) is not None or found:  # the id, or (an older site) read from its URL
        items.append({**video, "id": _int(video.get("id")) or int(found.group(1) if found else 0), "kind": "video",
                      "content_type": _text(video.get("content_type"), "video/mp4", 100)})
    items += [{**a, "kind": "raw" if a.get("kind") == "raw" else "attachment",
               "content_type": _text(a.get("content_type"), "application/octet-stream", 200)}
              for a in event.get("attachments") or [] if isinstance(a, dict)]
    return [item for item in items if _int(item.get("id"))]


def _mirror_media(site: Site, row: AlarmEvent, event: dict[str, Any]) -> None:
    for position, item in enumerate(_media_items(event)):
        if _mirrored(Media, site, item["id"]) is not None:
            continue
        sha256 = item.get("sha256") if isinstance(item.get("sha256"), str) and len(item["sha256"]) == 64 else ""
        Media.create(site=site, remote_id=item["id"], event=row, kind=item["kind"], position=position,
                     path="", thumb_path=None, content_type=item["content_type"], sha256=sha256,
                     width=_int(item.get("width")), height=_int(item.get("height")),
                     bytes=_int(item.get("bytes")) or 0, original_name=_text(item.get("name"), limit=200) or None)


# --- alarms ---------------------------------------------------------------------------------------------------


def _who(ref: object, site: Site) -> str | None:
    """A site's user reference as the central shows it: "alice at Site A" (a central's operator keeps the
    "<user> at <central>" the site gave)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("username"), str):
        return None
    name = ref["username"][:200]
    return name if ref.get("id") is None else f"{name} at {site.name}"


def mirror_alarm(key: str, alarm: dict[str, Any], at: datetime, domain: str, name: str | None = None,
                 change: Change | None = None) -> int | None:
    """An ``alarms`` message's Alarm: created or brought up to date, its last action on the trail; returns the
    local alarm id (None: its event is not known here)."""
    site = ensure_site(key, name)
    site.last_message_at = at
    site.save()
    remote = _remote_id(alarm, "an alarm")
    if isinstance(alarm.get("event"), dict):
        mirror_event(key, alarm["event"], at, domain, name, change)
    event = _mirrored(AlarmEvent, site, _int(alarm.get("event_id")) or -1)
    if event is None:
        log.warning("site %s: alarm %d is about an event not mirrored here; skipped", key, remote)
        return None
    row = _mirrored(Alarm, site, remote)
    created = row is None
    if row is None:
        row = Alarm(site=site, remote_id=remote, event=event)
    row.state = alarm.get("state") if alarm.get("state") in ("open", "acknowledged", "resolved") else "open"
    row.opened_at = parse_time(alarm.get("opened_at")) or row.opened_at or at
    row.acknowledged_at = parse_time(alarm.get("acknowledged_at"))
    row.resolved_at = parse_time(alarm.get("resolved_at"))
    resolution = _obj(alarm.get("resolution"))
    row.resolution_code = _text(resolution.get("code"), limit=100) or None
    row.resolution = _text(resolution.get("text")) if resolution else None
    row.remote_by = {role: who for role in ("opened", "acknowledged", "resolved")
                     if (who := _who(alarm.get(f"{role}_by"), site))}
    row.steps = [{"n": _int(s.get("n")) or n + 1, "text": _text(s.get("text"), limit=2000),
                  "done_by": None, "done_at": _text(s.get("done_at"), limit=40) or None,
                  "done_remote": _who(s.get("done_by"), site)}
                 for n, s in enumerate(alarm.get("steps") or []) if isinstance(s, dict)]
    row.save(force_insert=created)
    _mirror_last_action(site, row, alarm.get("last_action"), at)
    if change is not None:
        change.announce("alarm.created" if created else "alarm.updated", alarm_summary(row.id),
                        about=("alarm", row.id))
        change.announce("event.updated", get_event(domain, event.id), about=("event", event.id))
    return int(row.id)


def _mirror_last_action(site: Site, row: Alarm, last: object, at: datetime) -> None:
    """The site's last action on the alarm onto the central's trail (a note also as a note), once."""
    if not isinstance(last, dict) or not isinstance(last.get("action"), str):
        return
    detail = _obj(last.get("detail"))
    action = last["action"][:50]
    seen = {"site": site.key, "action": action, "detail": detail}
    done = (AuditEntry.select().where((AuditEntry.target_type == "alarm") & (AuditEntry.target_id == row.id)
                                      & (AuditEntry.action == action)))
    if any(entry.detail.get("mirrored") == seen for entry in done):
        return  # the same message again
    role = {"alarm.open": "opened", "alarm.acknowledge": "acknowledged", "alarm.resolve": "resolved"}.get(action)
    who = (row.remote_by or {}).get(role or "") or f"someone at {site.name}"
    if action == "alarm.note" and isinstance(detail.get("text"), str):
        AlarmNote.create(alarm=row, author=None, created_at=at, text=f"{detail['text'][:MAX_TEXT]}")
    AuditEntry.create(at=at, user=None, action=action, target_type="alarm", target_id=row.id,
                      detail={**{k: v for k, v in detail.items() if k in ("code", "text")},
                              "remote": {"user": who, "central": None}, "mirrored": seen})


class SiteMessage(NamedTuple):
    site: str  # the site's id, from the topic
    what: str  # the topic after <prefix>/<site>/: events, alarms, config, status, available, commands/result
    body: Any  # the JSON object (available: its text)
    # A retained copy the broker handed over as the central (re)subscribed: mirrored, but not a sign of life now
    # (the site's silence is supervised from its last message: vmond.store.supervision.check_sites).
    retained: bool = False


def mirror_messages(messages: list[SiteMessage], at: datetime, domain: str, names: dict[str, str],
                    change: Change | None = None) -> int:
    """Mirror *messages* in order, each in a savepoint of its own: one the mirror cannot take is logged and
    dropped without undoing the others. Returns how many were dropped."""
    dropped = 0
    database = Site._meta.database
    for message in messages:
        try:
            with database.atomic():
                heard = _last_heard(message) if message.retained else None
                _mirror_one(message, at, domain, names.get(message.site), change)
                if heard is not None:
                    _keep_last_heard(heard, change)
        except (BadMessage, KeyError, TypeError, ValueError, AttributeError) as exc:
            dropped += 1
            log.warning("central: site %s's %s message was dropped: %s", message.site, message.what, exc)
    return dropped


def _mirror_one(message: SiteMessage, at: datetime, domain: str, name: str | None, change: Change | None) -> None:
    key, what, body = message.site, message.what, message.body
    if what == "available":
        note_available(key, body == "online", at, name, change)
    elif what == "status":
        note_status(key, body, at, name, change)
    elif what == "config":
        mirror_config(key, body, at, name, change)
    elif what == "events":
        mirror_event(key, _part(body, "event"), at, domain, name, change)
    elif what == "alarms":
        mirror_alarm(key, _part(body, "alarm"), at, domain, name, change)
    elif what == "commands/result":
        note_message(key, at, name)
        record_result(key, body, at, change)


def _last_heard(message: SiteMessage) -> Site | None:
    """The site as last heard from before *message* (None: never, so even a retained copy is a first sign)."""
    site = Site.get_or_none(Site.key == message.site)
    return site if site is not None and site.last_message_at is not None else None


def _keep_last_heard(before: Site, change: Change | None) -> None:
    """Put the site's last message time back to *before*'s after mirroring a retained copy."""
    Site.update(last_message_at=before.last_message_at).where(Site.id == before.id).execute()
    announce_site(change, Site.get_by_id(before.id))


def _part(body: dict[str, Any], name: str) -> dict[str, Any]:
    part = body.get(name)
    if not isinstance(part, dict):
        raise BadMessage(f"no {name} object")
    return part
