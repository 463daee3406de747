"""Value types of the vmond configuration: secrets, addresses, sizes, durations.

These have no YAML knowledge and are safe to import anywhere (the SMTP, web and
MQTT modules use :class:`Secret` and :class:`HostPort` directly).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
from decimal import Decimal
from typing import NamedTuple

MASK = "********"


# --- public value types ---------------------------------------------------


class Secret:
    """A secret string that never shows itself in logs, reprs or dumps."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret text; call only where it is really needed."""
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time: SMTP AUTH compares camera passwords with this.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


class HostPort(NamedTuple):
    """A listen or connect address; host "" (or 0.0.0.0 / ::) means all addresses."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Problem(NamedTuple):
    """One configuration problem, located by file, line and dotted key path."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


# --- sizes and durations --------------------------------------------------

# KB/MB/GB are decimal like disk labels and `df -H`; the *iB units are binary.
SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
# Lower case only: "5M" could be read as five months.
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_size(text: str | int) -> int:
    """Parse ``25MB``, ``1.5GiB`` or a plain byte count; raise ValueError if invalid."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise TypeError("expected a size such as 25MB")
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}; expected e.g. 25MB, 10GB or 512KiB")
    unit = match[2].lower()
    if unit not in SIZE_UNITS:
        raise ValueError(f"unknown size unit {match[2]!r}; use B, KB, MB, GB, TB "
                         "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)")
    value = Decimal(match[1]) * SIZE_UNITS[unit]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def parse_duration(text: str | float) -> float:
    """Parse ``30s``, ``5m``, ``2h``, ``30d``, ``1h30m`` or plain seconds; raise ValueError if invalid."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text) or text < 0:
            raise ValueError("a duration must be a finite number of seconds, not negative")
        return float(text)
    if not isinstance(text, str):
        raise TypeError("expected a duration such as 30s, 5m, 2h or 30d")
    compact = "".join(text.split())
    if _NUMBER.fullmatch(compact):
        return float(compact)
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"invalid duration {text!r}; expected a number with "
                         "s, m, h or d (lower case), e.g. 30s, 5m, 2h, 30d or 1h30m")
    total = sum(Decimal(n) * DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))
    return float(total)


def format_size(size: int) -> str:
    """Inverse of :func:`parse_size`, choosing the largest exact unit."""
    for name in ("TB", "GB", "MB", "KB", "TiB", "GiB", "MiB", "KiB"):
        unit = SIZE_UNITS[name.lower()]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration`, choosing the largest exact unit."""
    for name, unit in DURATION_UNITS.items():
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{name}"
    return f"{seconds:g}s"


# --- addresses ------------------------------------------------------------

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]]*)):(?P<port>[^:]*)")
_HOSTPORT_HINT = 'expected "host:port", e.g. "0.0.0.0:2525", "[::]:2525" or ":2525"'


def is_host(text: str) -> bool:
    """True for an IP address or a syntactically valid host name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return len(text) <= 253 and HOSTNAME.fullmatch(text) is not None
    return True


def parse_hostport(text: str) -> HostPort:
    """Parse ``host:port``, ``[v6]:port`` or ``:port``; port 0 means "any free port"."""
    match = _HOSTPORT.fullmatch(text.strip())
    if not match:
        raise ValueError(_HOSTPORT_HINT)
    if match["v6"] is not None:
        host = match["v6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host = match["host"]
        if ":" in host:
            raise ValueError('put IPv6 addresses in brackets, e.g. "[::]:2525"')
        if host and not is_host(host):
            raise ValueError(f"{host!r} is not a valid host name or address")
    if not match["port"].isdigit() or not 0 <= int(match["port"]) <= 65535:
        raise ValueError(f"port {match['port']!r} is not a number from 0 to 65535")
    return HostPort(host, int(match["port"]))
