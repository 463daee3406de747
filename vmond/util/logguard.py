"""No secret in any log, at any level: the guard on the loggers of libraries that would write one.

Some libraries log what passes through them at DEBUG: peewee every SQL statement with its parameters (session CSRF
tokens, RTSP URLs with their passwords, password hashes), aiosmtpd every command line including AUTH's base64
credentials. ``logging.level: debug`` must show our own detail without theirs.

The guard is a filter on the library's logger, not only a level: a level is one value that any later
``setLevel``, ``dictConfig`` or a developer's quick experiment replaces without a trace, whereas a filter stays
until it is removed on purpose, whoever configures logging and whichever entry point (daemon, CLI, tests) runs.
Records are dropped, not redacted: a statement's text can hold literal values too (peewee inlines some), so the
only statement known to hold no secret is none. The level is raised as well, so the records are not even built.
Each module that uses such a library installs the guard when it is imported.
"""

from __future__ import annotations

import logging


class DropBelow(logging.Filter):
    """Drops every record of its logger below *level*."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def keep_quiet(name: str, level: int) -> None:
    """Nothing below *level* from the logger *name*, ever (idempotent)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, DropBelow) and f.level >= level for f in logger.filters):
        logger.addFilter(DropBelow(level))
    if logger.level < level:
        logger.setLevel(level)
