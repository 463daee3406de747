"""One message to one Apprise URL: the only module that touches Apprise.

Synchronous and blocking (Apprise does its own HTTP, SMTP ...): call it from a thread, never on the event loop.
Only what Debian 12's Apprise 1.2 and PyPI's 2.x both have is used: ``Apprise.instantiate(url)``, the plugin's
``notify_format`` and ``notify(body=, title=, body_format=)``, and ``apprise.conversion.convert_between``.
Apprise says why a send failed only in its log, so that log is caught for the calling thread while it sends; the
plugin is called directly (not through ``Apprise().notify()``, which in 1.2 and 2.x sends from threads or an
event loop of its own) so that its log lines come from that thread. Whatever Apprise says, the URL's password and
tokens never appear in the reason given back, nor in vmond's log.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import unquote, urlsplit

APPRISE_LOGGER = "apprise"
MAX_REASON = 300
# Apprise's debug lines and urllib3's (under requests) carry whole request URLs, and with them the tokens many
# services put in the path: held back at every logging.level, like the SMTP and database libraries' chatter.
QUIET = {APPRISE_LOGGER: logging.INFO, "urllib3": logging.WARNING}


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


class _Scrubber(logging.Filter):
    """Takes each URL's secrets out of what Apprise logs while it sends to that URL (by thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: dict[int, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        url = self.urls.get(record.thread or 0)
        if url is not None:
            record.msg, record.args = scrub(record.getMessage(), url), ()
        return True


_SCRUBBER = _Scrubber()  # one filter on Apprise's logger (which is process-wide itself), shared by the threads


def quiet_apprise_logging() -> None:
    """Hold back the libraries' request lines and scrub what Apprise says (idempotent)."""
    for name, level in QUIET.items():
        logger = logging.getLogger(name)
        if logger.level < level:
            logger.setLevel(level)
    apprise_log = logging.getLogger(APPRISE_LOGGER)
    if _SCRUBBER not in apprise_log.filters:
        apprise_log.addFilter(_SCRUBBER)


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
    """Send *title* and *body* (plain text) to *url*; :class:`DeliveryError` with the reason when it did not go
    out."""
    quiet_apprise_logging()
    import apprise  # noqa: PLC0415  # loads its ~100 plugins: only where messages are sent, not at every start
    from apprise.conversion import convert_between  # noqa: PLC0415

    handler = _ThreadLog()
    logger = logging.getLogger(APPRISE_LOGGER)
    logger.addHandler(handler)
    _SCRUBBER.urls[handler.thread] = url
    try:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise DeliveryError("Apprise does not understand this URL (unknown scheme or a malformed address)")
        wanted = plugin.notify_format
        if isinstance(wanted, tuple | list | set | frozenset):  # Apprise 2: several formats, it picks and converts
            ok = bool(plugin.notify(body=body, title=title, body_format="text"))
        else:  # Apprise 1 converts only in Apprise.notify(), which this bypasses (see the module's docstring)
            ok = bool(plugin.notify(body=convert_between("text", wanted, body), title=title, body_format=wanted))
    except DeliveryError:
        raise
    except Exception as exc:  # noqa: BLE001  # a plugin's own error is this send's failure, said without the URL
        handler.lines.append(f"{type(exc).__name__}: {exc}")
        ok = False
    finally:
        logger.removeHandler(handler)
        _SCRUBBER.urls.pop(handler.thread, None)
    if not ok:
        reason = "; ".join(dict.fromkeys(line.strip() for line in handler.lines if line.strip()))
        raise DeliveryError(scrub(reason or "Apprise reported a failure", url)[:MAX_REASON])
