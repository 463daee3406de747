"""Passwords and tokens: scrypt password hashes, random session tokens, and the roles' order.

Only token *hashes* are stored, so a copy of the database does not hand out live sessions.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

ROLES = ("guard", "supervisor", "admin")  # each role may do everything the ones before it may
MIN_PASSWORD_LENGTH = 8

# scrypt at n=2**14, r=8: about 16 MiB and 50 ms on a small x86 box, a few hundred ms on a Raspberry Pi.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
# Memory scrypt may use (128 * n * r bytes, plus slack). Explicit, so a hash with absurd parameters (a tampered
# database) is refused instead of exhausting the box.
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def role_allows(role: str, required: str) -> bool:
    """True when *role* is at least *required* in the order guard < supervisor < admin."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(required)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: ``scrypt$n$r$p$salt$hash``. Slow on purpose: call it off the event loop."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=_SCRYPT_MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown user as slow as one for a known user."""
    return hash_password(secrets.token_hex(8))


def check_password_policy(password: str) -> str | None:
    """A message for a password that is too weak, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters"
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
