"""The ``notify:`` section's values: Apprise URLs and the rules.

Whether Apprise understands a notification URL is asked when the configuration (or a contact in the dashboard) is
read, so that a mistyped scheme is reported with its file, line and key, not at the first alarm.

Apprise is imported on the first URL only (it loads its plugins: a fraction of a second on a Pi), and only parses
the URL here: nothing is sent, nothing is looked up. What Apprise logs while parsing (the URL itself, with its
tokens) is dropped for the asking thread; other threads' sends keep their log.
"""

from __future__ import annotations

import logging
import threading

import yaml

from vmond.config.types import Secret
from vmond.config.values import Ctx, Invalid, names_from, secret

EXAMPLE = "json://host/path or mailto://user:pass@host"


class _DropThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


def apprise_understands(url: str) -> bool:
    """True when Apprise has a plugin for *url* and the URL parses for it."""
    if "://" not in url:
        return False
    import apprise  # noqa: PLC0415  # loads its plugins: only when a URL is to be checked

    logger = logging.getLogger("apprise")
    quiet = _DropThisThread()
    logger.addFilter(quiet)
    try:
        return apprise.Apprise.instantiate(url) is not None
    except Exception:  # noqa: BLE001  # a plugin that fails to parse its own URL: not understood
        return False
    finally:
        logger.removeFilter(quiet)


NOTIFY_RULES = ("alarm_raised", "unhandled", "supervision")


def apprise_url(node: yaml.Node, ctx: Ctx, path: str) -> Secret | None:
    """An Apprise URL (``json://host/path``, ``mailto://user:pass@host``, ``tgram://token/chat`` ...): a secret,
    never echoed in a message; one Apprise does not understand is an error here, not at the first alarm."""
    value = secret()(node, ctx, path)
    if value is not None and not apprise_understands(value.reveal()):
        raise Invalid(f"Apprise does not understand this URL (unknown scheme or a malformed address); "
                      f"expected one such as {EXAMPLE}")
    return value


notify_rules = names_from(NOTIFY_RULES, "a notification rule", "rules",
                          f"expected a list drawn from {', '.join(NOTIFY_RULES)}")
