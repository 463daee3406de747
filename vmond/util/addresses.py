"""The addresses an installer types, checked the same way wherever they come from (the YAML, the API, the
dashboard's forms): a camera's mail address, and a contact's phone number and e-mail address.

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


# A phone number as people write it: E.164 (+15550100) or a local number, digits grouped by spaces, dashes, dots
# or parentheses. Guards dial it (tel: links drop the grouping), so it must be digits, not words.
_PHONE = re.compile(r"\+?[0-9(][0-9 ().-]*")
PHONE_DIGITS = (3, 15)  # 15: the most E.164 allows
PHONE_RULE = ("digits with optional spaces, dashes, dots or parentheses and an optional leading +, "
              "e.g. +15550100 or (555) 010-0100")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:39] + "…")


def _parentheses_paired(value: str) -> bool:
    depth = 0
    for char in value:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth not in (0, 1):  # a ")" before its "(", or a "(" inside another
            return False
    return depth == 0


def phone_number(text: str) -> str:
    """A contact's phone number, its whitespace collapsed."""
    value = " ".join(text.split())
    if not value:
        raise ValueError("must not be empty")
    if not _PHONE.fullmatch(value) or value[-1] not in "0123456789)":
        raise ValueError(f"{_shown(value)} is not a phone number: use {PHONE_RULE}")
    digits = sum(c.isdigit() for c in value)
    if not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]:
        raise ValueError(f"{_shown(value)} has {digits} digits; a phone number has {PHONE_DIGITS[0]} to "
                         f"{PHONE_DIGITS[1]}")
    if not _parentheses_paired(value):
        raise ValueError(f"{_shown(value)} has unmatched or nested parentheses")
    if value.startswith("+") and value.lstrip("+( ")[:1] == "0":
        raise ValueError(f"{_shown(value)}: after the + comes the country code, which never starts with 0")
    return value


_EMAIL_LOCAL = re.compile(r"[^\s@<>()\[\],;:\"\\]{1,64}")
_DOMAIN_LABEL = re.compile(r"[^\W_](?:[\w-]{0,61}[^\W_])?")


def email_address(text: str) -> str:
    """A contact's e-mail address: one @, a plain local part, a domain of at least two labels."""
    value = text.strip()
    problem = f"{_shown(value)} is not an e-mail address: write it like jane@example.com"
    local, at, domain = value.rpartition("@")
    if not at or len(value) > 254 or not _EMAIL_LOCAL.fullmatch(local):
        raise ValueError(problem)
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(problem)
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(problem)
    return value
