"""The camera directory: which SMTP addresses belong to a camera, answered from memory at RCPT time.

Loaded from the database at start and reloaded whenever cameras change, so the SMTP dialogue never waits for a
query. Per-camera SMTP passwords of cameras declared in the YAML stay in the config (in memory) and are compared
in constant time; those of cameras created in the dashboard are stored as scrypt hashes, checked on a thread
(at most :data:`CONCURRENT_HASH_CHECKS` at once: scrypt takes 16 MiB and tens of milliseconds each).

A camera logs in with its mail address or the part before the @, in any case; surrounding spaces and angle
brackets (``<camera-x@domain>``) are forgiven, a domain other than ``smtp.domain`` is not.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, NamedTuple

from vmond.store.cameras import smtp_identities
from vmond.util import auth

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.store.db import Database

log = logging.getLogger(__name__)

CONCURRENT_HASH_CHECKS = 2


class CameraEntry(NamedTuple):
    id: int
    name: str
    local_part: str
    account_id: int
    password_hash: str | None = None  # cameras created in the dashboard; YAML cameras keep theirs in the config


class CameraDirectory:
    def __init__(self, db: Database, config: Config) -> None:
        self._db = db
        self.domain = config.smtp.domain.lower()
        self._by_local_part: dict[str, CameraEntry] = {}
        self._passwords: dict[str, str] = {}
        self._hash_checks = asyncio.Semaphore(CONCURRENT_HASH_CHECKS)
        self.use_config(config)

    def use_config(self, config: Config) -> None:
        """Take the per-camera SMTP passwords the YAML declares (at start, and on a reload)."""
        self._passwords = {cam.smtp_address: cam.smtp_password.reveal()
                           for account in config.accounts for cam in account.cameras
                           if cam.smtp_password is not None}

    async def reload(self) -> None:
        cameras = [CameraEntry(**camera) for camera in await self._db.read(smtp_identities)]
        self._by_local_part = {c.local_part: c for c in cameras}
        log.debug("camera directory: %d active cameras", len(cameras))

    def split(self, address: str) -> tuple[str, str]:
        """(local part, domain) of *address*, lower-cased."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        return local.lower(), domain.lower()

    def lookup(self, address: str) -> CameraEntry | None:
        """The camera receiving mail at *address* (``local@domain``; the domain must be ours), or None."""
        local, domain = self.split(address)
        if domain != self.domain:
            return None
        return self._by_local_part.get(local)

    def by_username(self, username: str) -> CameraEntry | None:
        """The camera an SMTP login names (its address or the local part, any case), or None."""
        name = username.strip().removeprefix("<").removesuffix(">").strip()
        if "@" in name:
            local, domain = self.split(name)
            if domain != self.domain:
                return None
        else:
            local = name.lower()
        return self._by_local_part.get(local)

    def has_password(self, camera: CameraEntry) -> bool:
        return camera.local_part in self._passwords or camera.password_hash is not None

    def without_password(self) -> list[CameraEntry]:
        """Active cameras that cannot log in under ``smtp.auth: per-camera`` (no password set anywhere)."""
        return sorted((c for c in self._by_local_part.values() if not self.has_password(c)),
                      key=lambda c: (c.name.lower(), c.local_part))

    async def verify(self, username: str, password: str) -> CameraEntry | None:
        """The camera whose SMTP credentials these are, or None. A stored hash is checked off the event loop."""
        camera = self.by_username(username)
        if camera is None:
            return None
        expected = self._passwords.get(camera.local_part)
        if expected is not None:
            return camera if hmac.compare_digest(password.encode(), expected.encode()) else None
        if camera.password_hash is None:
            return None
        loop = asyncio.get_running_loop()
        async with self._hash_checks:
            ok = await loop.run_in_executor(None, auth.verify_password, password, camera.password_hash)
        return camera if ok else None

    def __len__(self) -> int:
        return len(self._by_local_part)
