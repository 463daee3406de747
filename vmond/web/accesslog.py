"""What the HTTP listener writes to the log, without a secret in it at any level.

The access log (``vmond.access``, shown at ``logging.level: debug``) names the client, the method, the path, the
status, the size, the time and the User-Agent. The query string is left out (``?…`` says there was one): a
client may put a token in a URL, and no query of ours needs to be in a log. No other header is written: cookies
and ``Authorization`` are secrets, and Referer repeats URLs with their queries.

aiohttp logs a request it cannot parse with the parser's exception, whose text quotes the offending bytes, say an
``Authorization`` or ``Cookie`` header line; that record keeps its words but loses the quote. Its error records
are said once per minute per kind, with a count: a client sending garbage must not write the log full.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError

from vmond.util.ratelimit import Repeats

ACCESS_LOGGER = "vmond.access"


class AccessLog(AbstractAccessLogger):
    """One line per request, as ``access_log_class`` of the runner."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        target = request.path + ("?…" if request.query_string else "")
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', request.remote, request.method, target,
                         request.version.major, request.version.minor, response.status, response.body_length,
                         time, request.headers.get("User-Agent", "-"))


class _QuietServerErrors(logging.Filter):
    """aiohttp's own error records, at most a few a minute whatever clients send; a malformed request is told as
    the kind of error, without the parser's quote of what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self._repeats = Repeats()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        quiet = self._repeats.due((record.msg, type(error).__name__))
        if quiet is None:
            return False
        more = f" ({quiet} more since the last report)" if quiet else ""
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = "%s: malformed request (%s, %d)%s", (record.getMessage(), type(error).__name__,
                                                                            error.code, more)
            record.exc_info = record.exc_text = None
        elif quiet:
            record.msg, record.args = "%s%s", (record.getMessage(), more)
        return True


logging.getLogger("aiohttp.server").addFilter(_QuietServerErrors())
