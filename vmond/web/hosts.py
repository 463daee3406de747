"""Which names the dashboard answers to: the ``Host`` header checked on every request.

DNS rebinding lets a web page on the internet point a name of its own (``evil.example``) at the appliance's
LAN address; the browser then sends that name as ``Host``, and same-origin rules let the page read the
answers and post forms, for example to ``/setup`` on a fresh appliance. Answering only the names the
appliance really has defeats it: IP literals (a rebinding page cannot use one), ``localhost``, the machine's
own host name (also with ``.local``, as mDNS announces it, and its fully qualified name), and the names an
installer lists in ``web.allowed_hosts``. Anything else gets ``421 Misdirected Request``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable

from aiohttp import web

from vmond.web.keys import HOSTS, WARNINGS
from vmond.web.security import Handler

log = logging.getLogger(__name__)

FQDN_LOOKUP_TIMEOUT = 5.0


def host_part(host_header: str) -> str:
    """The name or address of a ``Host`` header, without port, brackets or a trailing dot, lower-cased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class HostPolicy:
    """The set of names this dashboard answers to; ``*.example.com`` in the list allows its subdomains."""

    def __init__(self, allowed: Iterable[str] = (), hostname: str | None = None) -> None:
        self.refused = 0
        self._names: set[str] = {"localhost"}
        self._suffixes: list[str] = []
        for name in allowed:
            name = name.lower().rstrip(".")
            if name.startswith("*."):
                self._suffixes.append(name[1:])
            else:
                self._names.add(name)
        own = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
        if own:
            self._names.update({own, f"{own}.local", own.split(".", 1)[0]})

    def add(self, name: str) -> None:
        self._names.add(name.lower().rstrip("."))

    def allows(self, host_header: str) -> bool:
        host = host_part(host_header)
        if _is_ip_literal(host) or host in self._names or host.endswith(".localhost"):
            return True
        return any(host.endswith(suffix) for suffix in self._suffixes)

    async def learn_fully_qualified_name(self) -> None:
        """Add the machine's fully qualified name; a DNS lookup, so on a thread and bounded in time."""
        try:
            async with asyncio.timeout(FQDN_LOOKUP_TIMEOUT):
                fqdn = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)
        except (TimeoutError, OSError):
            return
        if fqdn and fqdn != "localhost":
            self.add(fqdn)


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    host = request.headers.get("Host")
    if host is None:
        # Not from a browser (HTTP/1.1 requires Host); and aiohttp 3.8 would look up this machine's name on the
        # event loop to stand in for it.
        return web.json_response({"error": "send a Host header"}, status=400)
    policy = request.app[HOSTS]
    if not policy.allows(host):
        policy.refused += 1
        if (quiet := request.app[WARNINGS].due("wrong host")) is not None:
            log.warning("refused a request for host %r from %s: not one of this appliance's names (add it to "
                        "web.allowed_hosts if it is); %d more such requests since the last warning", host[:100],
                        request.remote, quiet)
        return web.json_response(
            {"error": "this appliance does not answer to that host name; add it to web.allowed_hosts"},
            status=421)
    return await handler(request)
