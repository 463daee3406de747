"""A central station's mirror of its sites (issue 18): a site's messages become ordinary rows keyed by site.

Each function takes one message as the site published it (the formats are in schema/mqtt-messages.json) and
brings the mirror up to it in the caller's transaction: accounts with contacts and cameras from the retained
``config``, events from ``events``, alarms (with their notes, steps and who did what) from ``alarms``. A row is
found by ``(site, remote_id)``, so a message delivered twice changes nothing the second time; an event or alarm
message older than the row (``updated_at``) is ignored. Rows the site names before its config arrived (an event's
camera) are created from what the message says and completed by the config.

Mirrored changes are announced to the central's dashboards like local ones (a batch's at its end:
:mod:`vmond.store.mirrorbatch`), but never queued to MQTT again.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from vmond.store.alarms import PUBLISHED_ACTIONS, alarm_summary
from vmond.store.changes import Change
from vmond.store.events import MAX_IMAGES_PER_EVENT, get_event
from vmond.store.models import Account, Alarm, AlarmEvent, AlarmNote, AuditEntry, Camera, Contact, Media, Site
from vmond.store.monitoring import OFF_WALL_FLAGS
from vmond.store.sites import ensure_site, parse_time
from vmond.store.sitevalues import (
    CLOCK_SKEW,
    MAX_ATTACHMENTS,
    MAX_CONTACTS,
    MAX_FLAGS,
    MAX_ROWS,
    MAX_STEPS,
    MAX_TEXT,
    BadMessage,
    remote_id,
    site_count,
    site_detail,
    site_int,
    site_list,
    site_obj,
    site_text,
    site_words,
)
from vmond.util.kinds import KINDS
from vmond.util.schedule import Schedule

log = logging.getLogger(__name__)

MAX_TRAIL = 1000  # entries of one action on one alarm's trail (a site sending endless notes does not grow it on)
_MEDIA_URL = re.compile(r"/media/(\d+)$")


def _mirrored(model: type[Any], site: Site, remote: int) -> Any:
    return model.get_or_none((model.site == site) & (model.remote_id == remote))


def _mirrored_id(model: type[Any], site: Site, remote: int) -> int | None:
    """The local id of the site's row *remote*: one column read (a whole row is dearer, and an event's path
    needs only ids)."""
    return model.select(model.id).where((model.site == site) & (model.remote_id == remote)).scalar()


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
    announced = site_obj(doc.get("site"))
    site = ensure_site(key, name or site_text(announced.get("name"), limit=200) or None)
    site.timezone = site_text(announced.get("timezone"), limit=100) or site.timezone
    site.version = site_text(doc.get("version"), limit=100) or site.version
    site.config_at = site.last_message_at = at
    site.save()
    accounts: dict[int, Account] = {}
    for item in site_list(doc.get("accounts"))[:MAX_ROWS]:
        accounts[remote_id(item, "an account")] = _mirror_account(site, item)
    listed = set()
    for item in site_list(doc.get("cameras"))[:MAX_ROWS]:
        remote = remote_id(item, "a camera")
        account = accounts.get(site_int(item.get("account_id")) or -1)
        if account is None:
            log.warning("site %s: camera %d names an account the config does not list; skipped", key, remote)
            continue
        listed.add(remote)
        camera = _camera(site, remote, site_text(item.get("name"), limit=200), account)
        camera.name = site_text(item.get("name"), camera.name, 200)
        camera.account = account
        camera.active = bool(item.get("active", True))
        silence = item.get("max_silence")
        camera.max_silence = (float(silence) if isinstance(silence, (int, float)) and not isinstance(silence, bool)
                              and 0 <= silence <= 10 * 365 * 86400 else None)
        camera.snoozed_until = parse_time(item.get("snoozed_until"))
        camera.save()
    unlisted = [c.id for c in Camera.select(Camera.id, Camera.remote_id).where(Camera.site == site)
                if c.remote_id not in listed]
    for start in range(0, len(unlisted), 500):  # a few ids a statement: SQLite bounds a statement's parameters
        Camera.update(active=False).where(Camera.id.in_(unlisted[start:start + 500])).execute()
    if change is not None:
        change.announce("site.config", {"id": site.key, "name": site.name}, about=("site-config", site.id))
    return site


def _mirror_account(site: Site, item: dict[str, Any]) -> Account:
    account = _account(site, item["id"], site_text(item.get("name"), limit=200))
    account.name = site_text(item.get("name"), account.name, 200)
    account.address = site_text(item.get("address"), "", 2000)
    account.notes = site_text(item.get("notes"), "", MAX_TEXT)
    plan = item.get("action_plan")
    account.action_plan = [{"text": site_text(s.get("text"), limit=2000),
                            "kinds": site_words(s.get("kinds"), 20, KINDS)}
                           for s in plan if isinstance(s, dict)][:MAX_STEPS] if isinstance(plan, list) else []
    account.schedule = _schedule(item.get("schedule"))
    manual = site_obj(site_obj(item.get("monitoring")).get("manual"))
    account.override_monitored = bool(manual["monitored"]) if "monitored" in manual else None
    account.override_until = parse_time(manual.get("until"))
    account.override_reason = site_text(manual.get("reason"), "", 2000)
    account.save()
    Contact.delete().where(Contact.account == account).execute()
    contacts = [c for c in site_list(item.get("contacts")) if isinstance(c, dict)][:MAX_CONTACTS]
    for n, contact in enumerate(contacts):
        Contact.create(account=account, name=site_text(contact.get("name"), "?", 200),
                       phone=site_text(contact.get("phone"), limit=100) or None,
                       email=site_text(contact.get("email"), limit=200) or None,
                       role=site_text(contact.get("role"), limit=200) or None,
                       priority=min(site_count(contact.get("priority"), 0), 1000) or n + 1)
    return account


def _schedule(value: object) -> Any:
    """The schedule as the site stores it, if it reads as one (the central shows it, the site applies it), its
    windows and exceptions bounded."""
    if not isinstance(value, dict):
        return None
    try:
        schedule = Schedule.from_json(value).to_json()  # as the central reads it: nothing else rides along
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    schedule["weekly"] = schedule["weekly"][:MAX_STEPS]
    schedule["exceptions"] = [{**e, "name": site_text(e["name"], limit=200)}
                              for e in schedule["exceptions"][:MAX_STEPS]]
    return schedule


# --- events ---------------------------------------------------------------------------------------------------


def mirror_event(key: str, event: dict[str, Any], at: datetime, domain: str, name: str | None = None,
                 change: Change | None = None, later: Later | None = None) -> int | None:
    """An ``events`` message's Event: created or brought up to date; returns the local event id (None: an older
    copy, ignored)."""
    site = ensure_site(key, name)  # its sign of life: the batch's (vmond.store.sites.note_heard)
    remote = remote_id(event, "an event")
    latest = at + CLOCK_SKEW  # not later: a time far ahead would keep an event atop the wall, or unchangeable
    updated = parse_time(event.get("updated_at"), latest) or parse_time(event.get("received_at"), latest) or at
    row = (AlarmEvent.select(AlarmEvent.id, AlarmEvent.updated_at)
           .where((AlarmEvent.site == site) & (AlarmEvent.remote_id == remote)).first())
    if row is not None and row.updated_at > updated:
        return None  # a redelivered older copy
    account_ref = event.get("account") if isinstance(event.get("account"), dict) else None
    camera_ref = event.get("camera") if isinstance(event.get("camera"), dict) else None
    camera = None
    if account_ref is not None and camera_ref is not None:
        camera_remote = remote_id(camera_ref, "an event's camera")
        camera = _mirrored_id(Camera, site, camera_remote)
        if camera is None:
            account = _account(site, remote_id(account_ref, "an event's account"),
                               site_text(account_ref.get("name"), limit=200))
            camera = _camera(site, camera_remote, site_text(camera_ref.get("name"), limit=200), account).id
    received = parse_time(event.get("received_at"), latest) or at
    flags = site_words(event.get("flags"), MAX_FLAGS)
    fields = {
        "camera": camera, "received_at": received, "updated_at": updated,
        "event_time": parse_time(event.get("event_time"), latest) or received,
        "event_type": site_text(event.get("event_type"), "event", 200), "subject": site_text(event.get("subject")),
        "channel": site_text(event.get("channel"), limit=200) or None,
        "camera_name": site_text(event.get("camera_name"), limit=200) or None,
        "vendor": site_text(event.get("vendor"), limit=100) or None,
        "status": event.get("status") if event.get("status") in ("active", "dismissed", "alarmed") else "active",
        "kind": event.get("kind") if event.get("kind") in KINDS else "other",
        "priority": min(5, max(1, site_int(event.get("priority")) or 3)),
        "is_test": bool(event.get("is_test")), "flags": flags,
        "mail_count": min(site_count(event.get("mail_count"), 1), 1_000_000) or 1,
        "video_state": site_text(site_obj(event.get("video")).get("state"), "none", 20),
        "off_wall": any(flag in OFF_WALL_FLAGS for flag in flags),
    }
    created = row is None
    if row is None:
        row_id = int(AlarmEvent.create(site=site, remote_id=remote, **fields).id)
    else:
        row_id = int(row.id)
        AlarmEvent.update(**fields).where(AlarmEvent.id == row_id).execute()
    _mirror_media(site, row_id, event)
    _tell(change, later, domain, "event.created" if created else "event.updated", "event", row_id)
    return row_id


def _media_items(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's media as the site lists them: pictures, the clip once ready, attachments."""
    images = [i for i in site_list(event.get("images")) if isinstance(i, dict)][:MAX_IMAGES_PER_EVENT]
    items = [{**i, "kind": "image", "content_type": site_text(i.get("content_type"), "image/jpeg", 100)}
             for i in images]
    video = site_obj(event.get("video"))
    found = _MEDIA_URL.search(video["url"]) if isinstance(video.get("url"), str) else None
    if site_int(video.get("id")) is not None or found:  # the id, or (an older site) read from its URL
        items.append({**video, "id": site_int(video.get("id")) or int(found.group(1) if found else 0), "kind": "video",
                      "content_type": site_text(video.get("content_type"), "video/mp4", 100)})
    items += [{**a, "kind": "raw" if a.get("kind") == "raw" else "attachment",
               "content_type": site_text(a.get("content_type"), "application/octet-stream", 200)}
              for a in site_list(event.get("attachments")) if isinstance(a, dict)][:MAX_ATTACHMENTS]
    return [item for item in items if (site_int(item.get("id")) or 0) > 0]


def _mirror_media(site: Site, event_id: int, event: dict[str, Any]) -> None:
    items = _media_items(event)
    ids = [item["id"] for item in items]
    known = {m.remote_id for m in Media.select(Media.remote_id).where((Media.site == site)
                                                                     & Media.remote_id.in_(ids))} if ids else set()
    for position, item in enumerate(items):
        if item["id"] in known:
            continue
        known.add(item["id"])  # listed twice in one message: one row
        sha256 = item.get("sha256") if isinstance(item.get("sha256"), str) and len(item["sha256"]) == 64 else ""
        Media.create(site=site, remote_id=item["id"], event=event_id, kind=item["kind"], position=position,
                     path="", thumb_path=None, content_type=item["content_type"], sha256=sha256,
                     width=site_int(item.get("width")), height=site_int(item.get("height")),
                     bytes=site_count(item.get("bytes"), 0),
                     original_name=site_text(item.get("name"), limit=200) or None)


# --- alarms ---------------------------------------------------------------------------------------------------


def _who(ref: object, site: Site) -> str | None:
    """A site's user reference as the central shows it: "alice at Site A" (a central's operator keeps the
    "<user> at <central>" the site gave)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("username"), str):
        return None
    name = ref["username"][:200]
    return name if ref.get("id") is None else f"{name} at {site.name}"


def mirror_alarm(key: str, alarm: dict[str, Any], at: datetime, domain: str, name: str | None = None,
                 change: Change | None = None, later: Later | None = None) -> int | None:
    """An ``alarms`` message's Alarm: created or brought up to date, its last action on the trail; returns the
    local alarm id (None: its event is not known here)."""
    site = ensure_site(key, name)  # its sign of life: the batch's (vmond.store.sites.note_heard)
    remote = remote_id(alarm, "an alarm")
    if isinstance(alarm.get("event"), dict):
        mirror_event(key, alarm["event"], at, domain, name, change, later)
    event = _mirrored(AlarmEvent, site, site_int(alarm.get("event_id")) or -1)
    if event is None:
        log.warning("site %s: alarm %d is about an event not mirrored here; skipped", key, remote)
        return None
    row = _mirrored(Alarm, site, remote)
    created = row is None
    if row is None:
        row = Alarm(site=site, remote_id=remote, event=event)
    elif row.event_id != event.id:
        raise BadMessage(f"alarm {remote} names event {alarm.get('event_id')}, mirrored with another")
    state = alarm.get("state") if alarm.get("state") in ("open", "acknowledged", "resolved") else "open"
    if row.state == "resolved" and state != "resolved":
        return None  # a site resolves an alarm once: an older copy delivered again must not reopen it
    latest = at + CLOCK_SKEW
    row.state = state
    row.opened_at = parse_time(alarm.get("opened_at"), latest) or row.opened_at or at
    row.acknowledged_at = parse_time(alarm.get("acknowledged_at"), latest)
    row.resolved_at = parse_time(alarm.get("resolved_at"), latest)
    resolution = site_obj(alarm.get("resolution"))
    row.resolution_code = site_text(resolution.get("code"), limit=100) or None
    row.resolution = site_text(resolution.get("text")) if resolution else None
    row.remote_by = {role: who for role in ("opened", "acknowledged", "resolved")
                     if (who := _who(alarm.get(f"{role}_by"), site))}
    row.steps = [{"n": site_int(s.get("n")) or n + 1, "text": site_text(s.get("text"), limit=2000),
                  "done_by": None, "done_at": site_text(s.get("done_at"), limit=40) or None,
                  "done_remote": _who(s.get("done_by"), site)}
                 for n, s in enumerate(site_list(alarm.get("steps"))[:MAX_STEPS]) if isinstance(s, dict)]
    row.save(force_insert=created)
    _mirror_last_action(site, row, alarm.get("last_action"), at)
    _tell(change, later, domain, "alarm.created" if created else "alarm.updated", "alarm", row.id)
    _tell(change, later, domain, "event.updated", "event", event.id)
    return int(row.id)


def _mirror_last_action(site: Site, row: Alarm, last: object, at: datetime) -> None:
    """The site's last action on the alarm onto the central's trail (a note also as a note), once."""
    if not isinstance(last, dict) or last.get("action") not in PUBLISHED_ACTIONS:
        return  # a site publishes only these; anything else is not put on the central's trail
    detail = site_detail(last.get("detail"))
    action = last["action"]
    role = {"alarm.open": "opened", "alarm.acknowledge": "acknowledged", "alarm.resolve": "resolved"}.get(action)
    when = getattr(row, f"{role}_at") if role else None  # tells a second take-over from the same message again
    seen = {"site": site.key, "action": action, "detail": detail, **({"at": when.isoformat()} if when else {})}
    done = list(AuditEntry.select().where((AuditEntry.target_type == "alarm") & (AuditEntry.target_id == row.id)
                                          & (AuditEntry.action == action)).limit(MAX_TRAIL))
    if any(entry.detail.get("mirrored") == seen for entry in done):
        return  # the same message again
    if len(done) >= MAX_TRAIL:
        log.warning("site %s: alarm %d already has %d %s entries; no more are kept", site.key, row.remote_id,
                    MAX_TRAIL, action)
        return
    who = _who(last.get("by"), site) or (row.remote_by or {}).get(role or "") or f"someone at {site.name}"
    if action == "alarm.note" and isinstance(detail.get("text"), str):
        AlarmNote.create(alarm=row, author=None, created_at=at, text=f"{detail['text'][:MAX_TEXT]}")
    AuditEntry.create(at=at, user=None, action=action, target_type="alarm", target_id=row.id,
                      detail={**{k: v for k, v in detail.items() if k in ("code", "text", "n")},
                              "remote": {"user": who, "central": None}, "mirrored": seen})


Later = list[tuple[str, str, int]]  # announcements a batch makes at its end, in order: (type, "event"|"alarm", id)


def _tell(change: Change | None, later: Later | None, domain: str, type_: str, kind: str, row_id: int) -> None:
    """Announce a mirrored event or alarm: now, or (in a batch, *later*) once for the batch at its end."""
    if later is not None:
        later.append((type_, kind, row_id))
    elif change is not None:
        data = get_event(domain, row_id) if kind == "event" else alarm_summary(row_id)
        change.announce(type_, data, about=(kind, row_id))
