"""Accounts, contacts and cameras declared in the YAML, brought into the database at start-up.

The YAML is the truth for what it declares: those rows are added or updated and marked ``from_config`` (shown
read-only in the UI). A camera that disappeared from the YAML is retired (it refuses mail) but keeps its events;
nothing here ever deletes an event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vmond.store.models import Account, AuditEntry, Camera, Contact, utcnow

if TYPE_CHECKING:
    from vmond.config import AccountConfig

log = logging.getLogger(__name__)


def sync_accounts(accounts: tuple[AccountConfig, ...]) -> dict[str, int]:
    """Apply the YAML's accounts; returns counts for the log."""
    counts = {"accounts": 0, "cameras": 0, "retired": 0}
    declared_cameras: set[str] = set()
    declared_accounts: set[int] = set()
    for declared in accounts:
        account = (Account.select().where(Account.name == declared.name, Account.from_config == True)  # noqa: E712
                   .first())
        if account is None:
            account = Account.create(name=declared.name, from_config=True)
        account.address = declared.address
        account.notes = declared.notes
        account.action_plan = [{"text": step.text, "kinds": list(step.kinds)} for step in declared.action_plan]
        account.priorities = dict(declared.priorities) or None  # the wall's queue: over events.priorities
        account.schedule = None if declared.schedule is None else declared.schedule.to_json()  # issue 17
        account.updated_at = utcnow()
        account.save()
        declared_accounts.add(account.id)
        counts["accounts"] += 1
        Contact.delete().where(Contact.account == account).execute()
        for contact in declared.contacts:
            Contact.create(account=account, name=contact.name, phone=contact.phone, email=contact.email,
                           role=contact.role, priority=contact.priority,
                           notify_url=None if contact.notify_url is None else contact.notify_url.reveal())
        for cam in declared.cameras:
            declared_cameras.add(cam.smtp_address)
            camera = Camera.get_or_none(Camera.smtp_local_part == cam.smtp_address)
            if camera is None:
                camera = Camera(smtp_local_part=cam.smtp_address)
            elif not camera.from_config:
                log.warning("camera address %s was created in the dashboard; the YAML now takes it over",
                            cam.smtp_address)
            camera.account = account
            camera.name = cam.name
            camera.rtsp_url = cam.rtsp_url.reveal() if cam.rtsp_url is not None else None
            camera.smtp_password_hash = None  # the YAML keeps its password; see CameraDirectory
            camera.smtp_password_in_config = cam.smtp_password is not None
            camera.max_silence = cam.max_silence  # supervision; the watcher notes when it began
            camera.from_config = True
            camera.active = True
            camera.save()
            counts["cameras"] += 1
    stale = Camera.select().where(Camera.from_config == True, Camera.smtp_local_part.not_in(  # noqa: E712
        list(declared_cameras) or [""]))
    for camera in stale:
        if camera.active:
            camera.active = False
            camera.smtp_password_in_config = False  # its password left the file with it
            camera.save()
            counts["retired"] += 1
            AuditEntry.create(action="camera.retire", target_type="camera", target_id=camera.id,
                              detail={"reason": "removed from the configuration"})
    # Accounts dropped from the YAML become ordinary, editable accounts (their events stay).
    (Account.update(from_config=False)
     .where(Account.from_config == True, Account.id.not_in(list(declared_accounts) or [0]))  # noqa: E712
     .execute())
    return counts
