"""The installer's view of refused SMTP recipients: why a camera's mail did not arrive. Bounded to the newest rows."""

from __future__ import annotations

from typing import Any

from vmond.store.models import SmtpRefusal

KEEP = 1000


def add_refusal(peer: str, mail_from: str, recipient: str, reply: str) -> None:
    row = SmtpRefusal.create(peer=peer, mail_from=mail_from, recipient=recipient, reply=reply)
    SmtpRefusal.delete().where(SmtpRefusal.id <= row.id - KEEP).execute()


def list_refusals(limit: int = 100) -> list[dict[str, Any]]:
    rows = SmtpRefusal.select().order_by(SmtpRefusal.id.desc()).limit(limit)
    return [{"at": r.at.isoformat(), "peer": r.peer, "mail_from": r.mail_from, "recipient": r.recipient,
             "reply": r.reply} for r in rows]
