"""``vmond notify-test [TARGET]``: a test message to one or every ``notify.targets`` entry, from the command line.

Each target is tried once (no retries: the installer is watching), all at once, with one deadline; the answer
names the target and why it failed, never its URL. Blocking: runs in the command, not in the daemon. A target
that has not answered by the deadline is reported as such and its send left to its daemon thread
(:mod:`vmond.notify.threads`), so the command exits then rather than when (if ever) the target lets go.
"""

from __future__ import annotations

import socket
from concurrent.futures import wait
from typing import NamedTuple

from vmond.config import Config
from vmond.notify.deliver import DeliveryError, send
from vmond.notify.threads import SendThreads
from vmond.util.clock import utcnow

TIMEOUT = 30.0


class TestResult(NamedTuple):
    target: str
    error: str | None  # None: sent


class UnknownTarget(LookupError):
    pass


def notify_test(config: Config, target: str | None = None, timeout: float | None = None) -> list[TestResult]:
    """Send a test to *target* (a ``notify.targets`` name) or to all of them; one result each, in order, within
    *timeout* seconds (default :data:`TIMEOUT`) in all."""
    timeout = TIMEOUT if timeout is None else timeout
    targets = [t for t in config.notify.targets if target is None or t.name == target]
    if not targets:
        names = ", ".join(t.name for t in config.notify.targets) or "none configured"
        raise UnknownTarget(f"no notification target named {target!r} (targets: {names})" if target
                            else "no notification targets configured (notify.targets)")
    title = f"{config.site.name}: vmond test notification"
    body = (f"A test from vmond on {socket.gethostname()} (site {config.site.id}) at "
            f"{utcnow().strftime('%Y-%m-%d %H:%M:%S UTC')}. If you read this, alarms will reach you here.")
    threads = SendThreads("notify-test", max_stuck=len(targets))
    futures = [(t.name, threads.start(t.name, send, t.url.reveal(), title, f"{body}\nTarget: {t.name}"))
               for t in targets]
    wait([future for _, future in futures], timeout=timeout)
    results = []
    for name, future in futures:
        if not future.done():
            results.append(TestResult(name, f"no answer within {timeout:g} s"))
        elif isinstance(error := future.exception(), DeliveryError):
            results.append(TestResult(name, str(error)))
        elif error is not None:  # a plugin's own bug, said without the URL
            results.append(TestResult(name, f"{type(error).__name__} inside Apprise"))
        else:
            results.append(TestResult(name, None))
    return results
