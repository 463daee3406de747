"""SIGHUP: read the YAML again and apply its accounts and cameras, without dropping a single SMTP session.

Only ``accounts:`` is applied on the fly (that is what installers change while cameras are being set up); any
other change is reported as needing a restart. An invalid file changes nothing and is reported with every
problem, as ``vmond check-config`` would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from vmond.config import ConfigError, load_config
from vmond.store.siteconfig import requeue_config
from vmond.store.sync import sync_accounts

if TYPE_CHECKING:
    from vmond.services import Services

log = logging.getLogger(__name__)


async def reload_accounts(services: Services) -> str:
    """Apply the configuration file's accounts and cameras now; returns a one-line outcome for the log/STATUS."""
    path = services.config.source
    if path is None:
        return "reload: no configuration file to read"
    loop = asyncio.get_running_loop()
    try:
        fresh = await loop.run_in_executor(None, load_config, path)
    except (ConfigError, OSError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        for problem in problems:
            log.error("reload refused: %s", problem)
        return f"reload refused: {len(problems)} problem(s) in {path}"
    counts = await services.db.write(sync_accounts, fresh.accounts)
    services.cameras.use_config(fresh)
    await services.cameras.reload()
    if services.mqtt is not None:
        services.mqtt.refresh_discovery()
    services.config = dataclasses.replace(services.config, accounts=fresh.accounts)
    await requeue_config(services.changes, services.config)  # the central station's mirror of the site
    if services.supervisor is not None:
        services.supervisor.nudge()  # cameras' max_silence may have changed
    others = [f.name for f in dataclasses.fields(fresh)
              if f.name not in ("accounts", "source") and getattr(fresh, f.name) != getattr(services.config, f.name)]
    if others:
        log.warning("reload: changes in %s take effect after a restart", ", ".join(others))
    outcome = (f"reloaded {counts['accounts']} account(s), {counts['cameras']} camera(s) from {path}"
               f"{', retired ' + str(counts['retired']) if counts['retired'] else ''}")
    log.info("%s", outcome)
    return outcome
