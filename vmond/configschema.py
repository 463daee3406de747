"""Value parsers and key tables for the vmond configuration.

This module knows how to turn one YAML node into one value (a size, a
``host:port``, a list of networks ...) and which keys exist in which section.
It works on composed YAML *nodes* rather than loaded Python objects so that
every problem can name the line it came from, and so that YAML 1.1 surprises
(``auth: off`` becoming ``False``, ``phone: +15550100`` becoming an integer)
can be avoided by reading the text exactly as written.

Walking a whole document and cross-key checks live in :mod:`vmond.configcheck`,
the dataclasses in :mod:`vmond.config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

import yaml

from vmond.addresses import email_address, phone_number
from vmond.configtypes import (
    HostPort,
    Problem,
    Secret,
    format_duration,
    format_size,
    is_host,
    parse_duration,
    parse_hostport,
    parse_size,
)

_T = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, STR = (_T + n for n in ("null", "bool", "int", "float", "str"))


# --- parsing context and node helpers -------------------------------------


class Invalid(ValueError):
    """A value is wrong; the walker turns this into a Problem at the value's line."""


class Ctx:
    """State of one parse: where relative paths resolve and what went wrong."""

    def __init__(self, file: str, base_dir: Path, check_files: bool) -> None:
        self.file = file
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}  # dotted path -> line, for cross-key checks
        self.failed: set[str] = set()  # paths whose value was reported as wrong
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, where: yaml.Node | int, path: str, message: str) -> None:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.problems.append(Problem(self.file, line, path, message))

    def construct(self, node: yaml.ScalarNode) -> Any:
        try:
            return self._constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):  # e.g. "!!int abc"
            raise Invalid(f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}") from None


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL)


def kind(node: yaml.Node) -> str:
    """Describe what was found, for "expected X, found Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    names = {NULL: "nothing (null)", BOOL: "a boolean", INT: "a whole number",
             FLOAT: "a number", STR: f"a string ({node.value!r})"}
    return names.get(node.tag, "a value")


def text(node: yaml.Node, nullable: bool = False) -> str | None:
    """The scalar exactly as written, so ``+15550100`` or ``off`` stay strings."""
    if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
        return node.value
    if nullable and is_null(node):
        return None
    raise Invalid(f"expected a string, found {kind(node)}")


Parser = Callable[[yaml.Node, Ctx, str], Any]


def string(*, nullable: bool = False, lower: bool = False, empty: bool = False,
           pattern: re.Pattern[str] | None = None, hint: str = "",
           check: Callable[[str], bool] | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
        value = text(node, nullable)
        if value is None:
            return None
        value = value.lower() if lower else value
        if not value.strip() and not empty:
            raise Invalid("must not be empty" + (" (use null to leave it unset)" if nullable else ""))
        if (pattern and not pattern.fullmatch(value)) or (check and not check(value)):
            raise Invalid(f"{value!r} {hint}")
        return value
    return parse


def checked(convert: Callable[[str], str]) -> Parser:
    """A nullable string normalised by *convert*, whose ValueError message is the problem."""
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
        value = text(node, nullable=True)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return parse


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unclosed "[" in the host part
        return ""


def secret(*, schemes: tuple[str, ...] = ()) -> Parser:
    # Messages here never echo the value: it may be a password.
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> Secret | None:
        if is_null(node):
            return None
        value = text(node)
        if not value:
            raise Invalid("must not be empty (use null to leave it unset)")
        if schemes and _scheme(value) not in schemes:
            raise Invalid(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return Secret(value)
    return parse


def public_url(node: yaml.Node, ctx: Ctx, path: str) -> str | None:
    """The dashboard's address as others reach it (``https://monitor.example.com:8443``), normalised without a
    trailing slash so that media paths can be appended; it goes into MQTT messages, so no credentials."""
    value = text(node, nullable=True)
    if value is None:
        return None
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise Invalid("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        port, host = parts.port, parts.hostname
    except ValueError as exc:  # a port that is not a number, an unclosed "["
        raise Invalid(f"is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid("must start with http:// or https://, e.g. https://monitor.example.com:8443")
    if not host:
        raise Invalid("must name the host, e.g. https://monitor.example.com:8443")
    if not is_host(host):
        raise Invalid(f"{host!r} is not a host name or address")
    if parts.username is not None or parts.password is not None:
        raise Invalid("must not hold a user name or password (it is sent in every MQTT message)")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise Invalid("must not have a query (?...) or fragment (#...)")
    if port == 0:
        raise Invalid("port 0 is not a port others can reach")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def boolean(node: yaml.Node, ctx: Ctx, path: str) -> bool:
    if isinstance(node, yaml.ScalarNode):
        word = node.value.lower()
        if node.tag == BOOL and word in ("true", "false"):
            return word == "true"
        if node.tag == BOOL:  # YAML 1.1 yes/no/on/off: ambiguous to readers
            raise Invalid(f"write true or false instead of {node.value!r}")
        if node.tag == STR and word in ("true", "false"):
            raise Invalid("write true or false without quotes")
    raise Invalid(f"expected true or false, found {kind(node)}")


def integer(minimum: int, maximum: int | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> int:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == INT):
            raise Invalid(f"expected a whole number, found {kind(node)}")
        value = ctx.construct(node)
        if value < minimum or (maximum is not None and value > maximum):
            limit = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise Invalid(f"must be {limit}, not {value}")
        return value
    return parse


def positive_number(node: yaml.Node, ctx: Ctx, path: str) -> float:
    if not (isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT)):
        raise Invalid(f"expected a number, found {kind(node)}")
    value = float(ctx.construct(node))
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"must be a number greater than 0, not {node.value}")
    return value


def choice(*values: str) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> str:
        value = text(node).lower()
        if value not in values:
            raise Invalid(f"{value!r} is not one of: {', '.join(values)}")
        return value
    return parse


def size(minimum: int) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> int:
        try:
            value = parse_size(text(node))
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if value < minimum:
            raise Invalid(f"must be at least {format_size(minimum)}")
        return value
    return parse


def duration(*, positive: bool = True, maximum: float | None = None) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> float:
        try:
            value = parse_duration(text(node))
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and value <= 0:
            raise Invalid("must be longer than 0s")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {format_duration(maximum)}")
        return value
    return parse


def hostport(*, nullable: bool = False) -> Parser:
    def parse(node: yaml.Node, ctx: Ctx, path: str) -> HostPort | None:
        value = text(node, nullable)
        try:
            return None if value is None else parse_hostport(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return parse


def path(*, nullable: bool = True, file: bool = True) -> Parser:
    """A path; relative paths resolve against the config file's directory."""
    def parse(node: yaml.Node, ctx: Ctx, key: str) -> Path | None:
        value = text(node, nullable)
        if value is None:
            return None
        if not value.strip() or "\0" in value:
            raise Invalid("must be a file name" + (" (use null to leave it unset)" if nullable else ""))
        resolved = Path(os.path.normpath(ctx.base_dir / value))
        if ctx.check_files and file:
            if resolved.is_dir():
                raise Invalid(f"a directory, not a file: {resolved}")
            if not resolved.is_file():
                raise Invalid(f"file not found: {resolved}")
            if not os.access(resolved, os.R_OK):
                raise Invalid(f"file not readable: {resolved}")
        if ctx.check_files and not file and resolved.exists() and not resolved.is_dir():
            raise Invalid(f"not a directory: {resolved}")
        return resolved
    return parse


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(node: yaml.Node, ctx: Ctx, key: str) -> tuple[Network, ...]:
    """CIDR networks; host bits are cleared (10.0.0.1/8 means 10.0.0.0/8)."""
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of networks, e.g. [10.0.0.0/8], found {kind(node)}")
    if not node.value:
        raise Invalid("list at least one network; no camera could connect")
    result = []
    for index, item in enumerate(node.value):
        try:
            result.append(ipaddress.ip_network(text(item), strict=False))
        except ValueError as exc:
            ctx.problem(item, f"{key}[{index}]", f"not a network: {exc}")
    return tuple(result)


def host_names(node: yaml.Node, ctx: Ctx, key: str) -> tuple[str, ...]:
    """Host names (``*.example.com`` for all names under one), lower-cased, without a trailing dot."""
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(f"expected a list of host names, e.g. [monitor.example.com], found {kind(node)}")
    result = []
    for index, item in enumerate(node.value):
        try:
            name = (text(item) or "").strip().lower().rstrip(".")
        except Invalid as exc:
            ctx.problem(item, f"{key}[{index}]", str(exc))
            continue
        bare = name[2:] if name.startswith("*.") else name
        if not bare or ":" in bare or not is_host(bare):
            ctx.problem(item, f"{key}[{index}]", f"{name!r} is not a host name (no port, no scheme; "
                        "*.example.com allows every name under example.com)")
            continue
        result.append(name)
    return tuple(result)


# --- key tables -----------------------------------------------------------

REQUIRED: Any = object()  # default for keys without one


@dataclass(frozen=True)
class Key:
    """One leaf key: how to parse it, its default and how to show it in a dump."""

    parse: Parser
    default: Any
    show: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class ListOf:
    """A key holding a list of mappings that each follow ``table``."""

    table: Table


Table = dict[str, Union[Key, ListOf, "Table"]]

SITE_ID = re.compile(r"[a-z0-9-]+")


def _topic(value: str) -> bool:
    return not (set(value) & {"+", "#", "\0"} or value.startswith("/") or value.endswith("/"))


_TOPIC_HINT = "must be an MQTT topic without +, # or a leading/trailing /"
_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
             "::1/128", "fc00::/7", "fe80::/10")

CONTACT: Table = {
    "name": Key(string(), REQUIRED),
    "phone": Key(checked(phone_number), None),  # with email: at least one of them, see vmond.configcheck
    "email": Key(checked(email_address), None),
    "role": Key(string(nullable=True), None),
    "priority": Key(integer(1), None),  # None: position in the list
}
CAMERA: Table = {
    "name": Key(string(), REQUIRED),
    # Reduced to the local part and checked against smtp.domain in vmond.configcheck.
    "smtp_address": Key(string(lower=True), REQUIRED),
    "smtp_password": Key(secret(), None),
    "rtsp_url": Key(secret(schemes=("rtsp", "rtsps")), None),
}
ACCOUNT: Table = {
    "name": Key(string(), REQUIRED),
    "address": Key(string(empty=True), ""),
    "notes": Key(string(empty=True), ""),
    "contacts": ListOf(CONTACT),
    "cameras": ListOf(CAMERA),
}
SECTIONS: Table = {
    "site": {
        "id": Key(string(pattern=SITE_ID, hint="may only contain a-z, 0-9 and -"), "demo-site"),
        "name": Key(string(), "Demo Site"),
    },
    "smtp": {
        "listen": Key(hostport(), HostPort("0.0.0.0", 2525), str),
        "domain": Key(string(lower=True, check=is_host, hint="is not a domain name"), "monitor.local"),
        "auth": Key(choice("off", "accept-any", "per-camera"), "accept-any"),
        "max_message_size": Key(size(1), 25 * 10**6, show=format_size),
        "max_connections": Key(integer(1), 64),
        # Sessions one client address may hold: an NVR mails for all its channels from one address, and 16 let a
        # 16-channel NVR alarm on every channel at once, while one host takes at most a quarter of the default 64.
        # At most max_connections (a default above a smaller max_connections follows it: vmond.configcheck).
        "max_connections_per_peer": Key(integer(1), 16),
        "idle_timeout": Key(duration(), 60.0, show=format_duration),
        "allow_networks": Key(networks, tuple(ipaddress.ip_network(n) for n in _NETWORKS),
                              lambda nets: [str(n) for n in nets]),
        "tls": {
            "certificate": Key(path(), None, str),
            "key": Key(path(), None, str),
            "implicit_tls_listen": Key(hostport(nullable=True), None, str),
            "min_version": Key(choice("1.0", "1.1", "1.2", "1.3"), "1.2"),
        },
    },
    "web": {
        "listen": Key(hostport(), HostPort("0.0.0.0", 8080), str),
        "tls": {
            "certificate": Key(path(), None, str),
            "key": Key(path(), None, str),
            "self_signed": Key(boolean, False),
        },
        "metrics_public": Key(boolean, False),
        "allowed_hosts": Key(host_names, (), list),
        "max_connections": Key(integer(1), 256),
        "max_connections_per_peer": Key(integer(1), 32),
        "public_url": Key(public_url, None),  # None: MQTT messages carry relative media URLs only
    },
    "storage": {
        "data_dir": Key(path(nullable=False, file=False), Path("/var/lib/vmond"), str),
        "max_media_size": Key(size(1), 10 * 10**9, show=format_size),
        "min_free_space": Key(size(0), 10**9, show=format_size),
        "retention": Key(duration(), 30 * 86400.0, show=format_duration),
        "audit_retention": Key(duration(), 365 * 86400.0, show=format_duration),
    },
    "events": {
        "coalesce_window": Key(duration(positive=False), 30.0, show=format_duration),
    },
    "video": {
        "enabled": Key(boolean, True),
        "fps": Key(positive_number, 2.0),
        "max_width": Key(integer(16), 1280),
        "encoder": Key(choice("auto", "libx264", "h264_v4l2m2m"), "auto"),
    },
    "mqtt": {
        "enabled": Key(boolean, False),
        "host": Key(string(check=is_host, hint="is not a host name or address"), "localhost"),
        "port": Key(integer(1, 65535), 1883),
        "username": Key(string(nullable=True), None),
        "password": Key(secret(), None),
        "password_file": Key(path(), None, str),
        "client_id": Key(string(nullable=True), None),  # None: vmond-<site.id>
        # MQTT carries keepalive as a 16-bit number of seconds.
        "keepalive": Key(duration(maximum=65535), 30.0, show=format_duration),
        "tls": {
            "enabled": Key(boolean, False),
            "ca_file": Key(path(), None, str),
            "certificate": Key(path(), None, str),
            "key": Key(path(), None, str),
            "insecure": Key(boolean, False),
        },
        "topic_prefix": Key(string(check=_topic, hint=_TOPIC_HINT), "vmond"),
        "outbox_max_messages": Key(integer(1), 100_000),
        "outbox_max_age": Key(duration(), 7 * 86400.0, show=format_duration),
        "embed_thumbnail": Key(boolean, False),
        "homeassistant_discovery": Key(boolean, False),
        "homeassistant_prefix": Key(string(check=_topic, hint=_TOPIC_HINT), "homeassistant"),
    },
    "live": {
        "max_streams": Key(integer(1), 2),
        "snapshot_on_alarm": Key(boolean, False),
    },
    "logging": {
        "level": Key(choice("debug", "info", "warning", "error"), "info"),
    },
    "accounts": ListOf(ACCOUNT),
}


def key_paths(table: Table = SECTIONS, prefix: str = "") -> list[str]:
    """Every key and section as a dotted path, lists written as ``accounts[]``."""
    result = []
    for name, spec in table.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, Key):
            result.append(dotted)
        elif isinstance(spec, ListOf):
            result.append(dotted)
            result += key_paths(spec.table, f"{dotted}[].")
        else:
            result.append(dotted)
            result += key_paths(spec, f"{dotted}.")
    return result


def suggest(key: str, table: Table, where: str) -> str:
    """The message for an unknown key, with a "did you mean" when one fits."""
    # The same key one level deeper (forgotten "tls:" or "cameras:") is the
    # likeliest mistake, then a typo, then the right key in the wrong section.
    generic = re.sub(r"\[\d+\]", "[]", where)
    elsewhere = [p for p in key_paths() if p.rsplit(".", 1)[-1] == key]
    nearby = [p for p in elsewhere if p.startswith(f"{generic}.")] if generic else []
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    if close and not nearby:
        return f"unknown key; did you mean `{close[0]}`?"
    if nearby or elsewhere:
        names = [f"`{p}`" for p in (nearby or elsewhere)]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"unknown key here; did you mean {listed}?"
    return f"unknown key; known keys here: {', '.join(table)}"
