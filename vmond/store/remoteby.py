"""Who did it, when a central station's operator did (issue 18): such a change has no local user, so the alarm
keeps "<user> at <central>" per role in ``alarm.remote_by`` (``opened``, ``acknowledged``, ``resolved``) and
shows it where a user would be. Synchronous, on a database thread, inside the change's transaction.
"""

from __future__ import annotations

from typing import Any

from vmond.store.changes import Change
from vmond.store.models import Alarm


def mark(alarm: Alarm, role: str, user_id: int | None, change: Change | None) -> None:
    """*role* is now *user_id*'s, or (no user, a remote change) the central operator's; the caller saves."""
    remote = change.remote if change is not None and user_id is None else None
    names = {k: v for k, v in (alarm.remote_by or {}).items() if k != role}
    alarm.remote_by = names | ({role: remote} if remote else {})


def who(alarm: Alarm, role: str) -> dict[str, Any] | None:
    """The operator as an API's user reference: ``{"id": None, "username": "<user> at <central>"}``, or None."""
    name = (alarm.remote_by or {}).get(role)
    return None if not name else {"id": None, "username": name}
