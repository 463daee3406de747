"""The addresses an installer types, checked the same way wherever they come from (the YAML, the API, the
dashboard's forms): a camera's mail address.

Each check returns the normalised value or raises :class:`ValueError` with a message for the installer.
"""

from __future__ import annotations

import re

LOCAL_PART = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
LOCAL_PART_RULE = "up to 64 of a-z, 0-9, '.', '_', '+' and '-', starting with a letter or digit"


def camera_local_part(address: str, domain: str | None) -> str:
    """The local part of a camera's address: ``camera-front`` or ``camera-front@<domain>`` (any case) give
    ``camera-front``. A full address must be in *domain* (not checked when *domain* is None)."""
    local = address.lower()
    if "@" in local:
        local, _, other = local.rpartition("@")
        if domain is not None and other != domain.lower():
            raise ValueError(f"domain {other!r} is not smtp.domain {domain!r}; write just the part before the @")
    if not LOCAL_PART.fullmatch(local):
        raise ValueError(f"{local!r} is not a valid camera address: use {LOCAL_PART_RULE}")
    return local
