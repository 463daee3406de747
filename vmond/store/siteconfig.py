"""The retained ``<prefix>/<site>/config`` message: what a central station mirrors of this site (issue 18).

The site, its accounts with their contacts, action plans, schedules and monitoring state, and its cameras; never a
secret (no contact's notification URL, no SMTP password, no RTSP URL, no SMTP address). Queued through the outbox,
retained, at start, after SIGHUP and after each change of an account or camera: the broker keeps the newest. A
crash between a change and its config message is mended at the next start, which queues it again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vmond.store import outbox
from vmond.store.models import Account, Camera, Contact, utcnow
from vmond.store.monitoring import account_fields, camera_fields, monitoring_dict
from vmond.util.version import VERSION

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.store.changes import Change, Changes


def site_of(config: Config) -> dict[str, str]:
    return {"id": config.site.id, "name": config.site.name, "timezone": config.site.timezone}


def _account(account: Account, zone: str) -> dict[str, Any]:
    fields = account_fields(account)
    return {
        "id": account.id, "name": account.name, "address": account.address, "notes": account.notes,
        "contacts": [{"name": c.name, "phone": c.phone, "email": c.email, "role": c.role, "priority": c.priority}
                     for c in Contact.select().where(Contact.account == account)
                     .order_by(Contact.priority, Contact.id)],
        "action_plan": account.action_plan or [],
        "schedule": fields["schedule"],
        "monitoring": monitoring_dict(fields, zone),
    }


def _camera(camera: Camera) -> dict[str, Any]:
    snooze = camera_fields(camera)
    return {"id": camera.id, "name": camera.name, "account_id": camera.account_id, "active": camera.active,
            "max_silence": camera.max_silence, "snoozed": snooze["snoozed"], "snoozed_until": snooze["snoozed_until"]}


def config_message(site: dict[str, str]) -> dict[str, Any]:
    """The config message's body, read now."""
    return {"site": site, "version": VERSION, "at": utcnow().isoformat(),
            "accounts": [_account(a, site["timezone"]) for a in Account.select().order_by(Account.id)],
            "cameras": [_camera(c) for c in Camera.select().order_by(Camera.id)]}


def queue_config(site: dict[str, str], change: Change | None = None) -> None:
    """Queue the retained config message (nothing when MQTT is off)."""
    if change is None or change.topics is None:
        return
    payload = json.dumps(config_message(site), separators=(",", ":"), ensure_ascii=False).encode()
    outbox.supersede(change.topics.config)  # the broker keeps only the newest: one waits in the outbox at most
    outbox.enqueue(change.topics.config, payload, retain=True)
    change.queued += 1


async def requeue_config(changes: Changes, config: Config) -> None:
    """The accounts or cameras changed (or vmond started, or reloaded): tell the central station."""
    await changes.record(queue_config, site_of(config))
