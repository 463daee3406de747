"""``vmond notify-test [TARGET]``: a test message to one or every ``notify.targets`` entry, from the command line.

Each target is tried once (no retries: the installer is watching) with a deadline; the answer names the target
and why it failed, never its URL. Blocking: runs in the command, not in the daemon.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NamedTuple

from vmond.config import Config
from vmond.notify.deliver import DeliveryError, send
from vmond.util.clock import utcnow

TIMEOUT = 30.0


class TestResult(NamedTuple):
    target: str
    error: str | None  # None: sent


class UnknownTarget(LookupError):
    pass


def notify_test(config: Config, target: str | None = None, timeout: float = TIMEOUT) -> list[TestResult]:
    """Send a test to *target* (a ``notify.targets`` name) or to all of them; one result each, in order."""
    targets = [t for t in config.notify.targets if target is None or t.name == target]
    if not targets:
        names = ", ".join(t.name for t in config.notify.targets) or "none configured"
        raise UnknownTarget(f"no notification target named {target!r} (targets: {names})" if target
                            else "no notification targets configured (notify.targets)")
    title = f"{config.site.name}: vmond test notification"
    body = (f"A test from vmond on {socket.gethostname()} (site {config.site.id}) at "
            f"{utcnow().strftime('%Y-%m-%d %H:%M:%S UTC')}. If you read this, alarms will reach you here.")
    results = []
    pool = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="notify-test")
    futures = [(t.name, pool.submit(send, t.url.reveal(), title, f"{body}\nTarget: {t.name}")) for t in targets]
    for name, future in futures:
        try:
            future.result(timeout=timeout)
            results.append(TestResult(name, None))
        except DeliveryError as exc:
            results.append(TestResult(name, str(exc)))
        except FutureTimeout:
            results.append(TestResult(name, f"no answer within {timeout:.0f} s"))
    pool.shutdown(wait=False)  # a target still hanging is reported already; its thread ends with Apprise's timeouts
    return results
