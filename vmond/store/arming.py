"""Schedules and snooze, the changes (issue 17): a supervisor arms or disarms an account by hand, or snoozes a
camera, each until a stored end (none: until changed by hand) and each on the audit trail. What they mean for a
mail's event is in :mod:`vmond.store.monitoring`. Synchronous: runs on the writer thread, through the seam.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmond.store.accounts import NotFound, account_dict, check_editable
from vmond.store.cameras import camera_dict
from vmond.store.changes import Change
from vmond.store.models import Account, AuditEntry, Camera, utcnow
from vmond.store.monitoring import is_snoozed


def set_monitoring(domain: str, account_id: int, monitored: bool, until: datetime | None, reason: str,
                   user_id: int | None, change: Change | None = None) -> dict[str, Any]:
    """Arm (*monitored*) or disarm the account by hand until *until* (None: until changed by hand)."""
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise NotFound(account_id)
    if account.site_id is not None:  # a site arms its own accounts (a central mirrors it)
        check_editable(account, "account", "arm or disarm")
    account.override_monitored = monitored
    account.override_until = until
    account.override_reason = reason
    account.override_by_id = user_id
    account.save()
    AuditEntry.create(user=user_id, action="account.arm" if monitored else "account.disarm", target_type="account",
                      target_id=account_id,
                      detail={"until": None if until is None else until.isoformat(), "reason": reason})
    return account_dict(account, domain)


def snooze(domain: str, camera_id: int, until: datetime | None, reason: str, user_id: int | None,
           change: Change | None = None) -> dict[str, Any]:
    """Snooze the camera until *until*; None: end a snooze (unsnooze)."""
    camera = Camera.select(Camera, Account).join(Account).where(Camera.id == camera_id).first()
    if camera is None:
        raise NotFound(camera_id)
    if camera.site_id is not None:  # a site snoozes its own cameras (a central mirrors it)
        check_editable(camera, "camera", "snooze")
    was_snoozed = is_snoozed(camera, utcnow())
    camera.snoozed_until = until
    camera.snooze_reason = reason if until is not None else ""
    camera.snoozed_by_id = user_id if until is not None else None
    camera.save()
    if until is not None or was_snoozed:
        AuditEntry.create(user=user_id, action="camera.snooze" if until is not None else "camera.unsnooze",
                          target_type="camera", target_id=camera_id,
                          detail={"until": None if until is None else until.isoformat(), "reason": reason})
    return camera_dict(camera, domain)
