"""One message to one Apprise URL: the only module that touches Apprise.

Synchronous and blocking (Apprise does its own HTTP, SMTP ...): call it from a thread, never on the event loop.
Only what Debian 12's Apprise 1.2 and PyPI's 2.x both have is used: ``Apprise()``, ``.add(url)`` and
``.notify(body=, title=)``. Apprise says why a send failed only in its log, so that log is caught for the calling
thread while it sends; whatever it says, the URL and its password never appear in the reason given back.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import unquote, urlsplit

APPRISE_LOGGER = "apprise"
MAX_REASON = 300


class DeliveryError(Exception):
    """The message did not go out; ``str()`` says why, without the URL's secrets."""


class _ThreadLog(logging.Handler):
    """Apprise's warnings and errors raised on one thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.lines.append(record.getMessage())
            except Exception:  # noqa: BLE001  # a malformed log call inside Apprise must not break sending
                self.lines.append(str(record.msg))


def _secrets_of(url: str) -> list[str]:
    """What must never be shown of *url*: itself, and its password and path (tokens live there)."""
    found = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    for part in (parts.password, parts.username, parts.path.strip("/"), parts.query):
        if part and len(part) >= 4:
            found += [part, unquote(part)]
    return sorted(set(found), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """*text* with every secret part of *url* replaced by ``***``."""
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def send(url: str, title: str, body: str) -> None:
    """Send *title* and *body* to *url*; :class:`DeliveryError` with the reason when it did not go out."""
    import apprise  # noqa: PLC0415  # loads its ~100 plugins: only where messages are sent, not at every start

    handler = _ThreadLog()
    logger = logging.getLogger(APPRISE_LOGGER)
    logger.addHandler(handler)
    try:
        sender = apprise.Apprise()
        if not sender.add(url):
            raise DeliveryError("Apprise does not understand this URL (unknown scheme or a malformed address)")
        ok = bool(sender.notify(body=body, title=title))
    finally:
        logger.removeHandler(handler)
    if not ok:
        reason = "; ".join(dict.fromkeys(line.strip() for line in handler.lines if line.strip()))
        raise DeliveryError(scrub(reason or "Apprise reported a failure", url)[:MAX_REASON])
