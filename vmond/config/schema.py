"""The key tables of the vmond configuration: which keys exist in which section, how each is parsed (with
the parsers of :mod:`vmond.config.values`), and its default.

Walking a whole document and cross-key checks live in :mod:`vmond.config.check`, the dataclasses in
:mod:`vmond.config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from vmond.config.types import (
    HostPort,
    format_duration,
    format_size,
    is_host,
)
from vmond.config.values import (
    Parser,
    boolean,
    checked,
    choice,
    duration,
    host_names,
    hostport,
    integer,
    networks,
    path,
    positive_number,
    public_url,
    secret,
    size,
    string,
)
from vmond.util.addresses import email_address, phone_number

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
    "phone": Key(checked(phone_number), None),  # with email: at least one of them, see vmond.config.check
    "email": Key(checked(email_address), None),
    "role": Key(string(nullable=True), None),
    "priority": Key(integer(1), None),  # None: position in the list
}
CAMERA: Table = {
    "name": Key(string(), REQUIRED),
    # Reduced to the local part and checked against smtp.domain in vmond.config.check.
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
        # At most max_connections (a default above a smaller max_connections follows it: vmond.config.check).
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
        "max_connections": Key(integer(1), 512),
        "max_connections_per_peer": Key(integer(1), 64),
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
