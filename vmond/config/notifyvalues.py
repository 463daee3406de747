"""The ``notify:`` section's values: Apprise URLs and the rules.

Whether Apprise understands a notification URL is asked when the configuration (or a contact in the dashboard) is
read, so that a mistyped scheme is reported with its file, line and key, not at the first alarm.

Apprise is imported on the first URL only (it loads its plugins: a fraction of a second on a Pi), and only parses
the URL here: nothing is sent, nothing is looked up. What Apprise logs while parsing (the URL itself, with its
tokens) is dropped for the asking thread; other threads' sends keep their log.
"""

from __future__ import annotations

import difflib
import logging
import threading

import yaml

from vmond.config.types import Secret
from vmond.config.values import Ctx, Invalid, is_null, secret, text

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


def notify_rules(node: yaml.Node, ctx: Ctx, key: str) -> tuple[str, ...]:
    """Which changes notify: a list drawn from :data:`NOTIFY_RULES`."""
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list drawn from {', '.join(NOTIFY_RULES)}")
    result = []
    for index, item in enumerate(node.value):
        try:
            name = (text(item) or "").strip().lower()
        except Invalid as exc:
            ctx.problem(item, f"{key}[{index}]", str(exc))
            continue
        if name not in NOTIFY_RULES:
            close = difflib.get_close_matches(name, NOTIFY_RULES, n=1, cutoff=0.6)
            ctx.problem(item, f"{key}[{index}]", f"{name!r} is not a notification rule"
                        f"{f'; did you mean `{close[0]}`?' if close else ''} (rules: {', '.join(NOTIFY_RULES)})")
            continue
        if name not in result:
            result.append(name)
    return tuple(result)
