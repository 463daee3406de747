"""Several spooled mails recorded in one transaction (group commit), each as it would be on its own.

While mails queue up, the pipeline commits the ones whose media are already durable on disk together: one COMMIT,
one fsync of the database, for up to a batch of mails. A mail the pipeline took for a camera's resend (of a mail
committed before, or of one in flight with it) is looked up inside the transaction, which sees every mail before it
(also those earlier in the same batch), and noted on the original event rather than raised twice; the others were
checked against the committed mails already, and nothing but this pipeline commits mails in between.
Synchronous: run on the writer thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from vmond.store.changes import Change
from vmond.store.events import IngestRecord, IngestResult, find_resend, record_mail, record_resend


class ResendLost(RuntimeError):
    """A mail was taken for the resend of one in flight with it, but that one is not recorded: record it alone."""


class MailRecords(NamedTuple):
    """One recipient camera of one spooled mail."""

    local_part: str
    digest: str  # sha256 of the whole message
    resend: IngestRecord  # what a resend notes
    # The mail as a new alarm, its media on disk (checked against the committed mails when staged: no earlier mail
    # had its content); None: taken for a resend, looked up here.
    record: IngestRecord | None


class Recorded(NamedTuple):
    result: IngestResult
    record: IngestRecord | None  # what was stored (None for a resend)
    unused_media: tuple[str, ...]  # files written for it but not kept


def record_mails(domain: str, mails: list[list[MailRecords]], coalesce_window: float,
                 priorities: Mapping[str, int] | None = None, timezone: str = "UTC",
                 change: Change | None = None) -> list[list[Recorded]]:
    """Record *mails* in order, each recipient a new or extended event or a noted resend."""
    done = []
    for mail in mails:
        recorded = []
        for item in mail:
            if item.record is None:
                original = find_resend(item.local_part, item.digest, item.resend.received_at)
                if original is None:
                    raise ResendLost(f"no earlier mail to {item.local_part} with the same content")
                recorded.append(Recorded(record_resend(domain, item.resend.ingest_key, original, item.resend, change),
                                         None, ()))
                continue
            result = record_mail(domain, item.record, coalesce_window, change, priorities, timezone)
            recorded.append(Recorded(result, item.record, result.unused_media))
        done.append(recorded)
    return done
