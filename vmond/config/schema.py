"""Every key of the vmond configuration, declared once: the frozen dataclasses, one per section, whose fields are
named exactly like the YAML keys and carry how each is parsed (the parsers of :mod:`vmond.config.values`), its
default and how a dump shows it (see :mod:`vmond.config.spec`).

:data:`SECTIONS`, the key table that :mod:`vmond.config.check` walks, is derived from :class:`Config`. Checks
across keys, and defaults that follow other keys, live in :mod:`vmond.config.check`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from vmond.config.database import database_url, is_postgresql
from vmond.config.links import SITE_ID, CentralConfig, MqttConfig
from vmond.config.notifyvalues import NOTIFY_RULES, apprise_url, notify_rules
from vmond.config.schedule import schedule, show_schedule, timezone
from vmond.config.spec import ListOf, Section, Table, list_of, not_a_key, section, setting, table_of
from vmond.config.types import (
    HostPort,
    Secret,
    format_duration,
    format_size,
    is_host,
)
from vmond.config.values import (
    Ctx,
    Invalid,
    Network,
    Parser,
    boolean,
    checked,
    choice,
    duration,
    host_names,
    hostport,
    integer,
    is_null,
    names_from,
    networks,
    optional_networks,
    path,
    positive_number,
    priorities,
    public_url,
    secret,
    size,
    string,
)
from vmond.util.addresses import email_address, phone_number
from vmond.util.kinds import DEFAULT_PRIORITIES, KINDS
from vmond.util.schedule import Schedule

_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
             "::1/128", "fc00::/7", "fe80::/10")


def _networks(nets: tuple[Network, ...]) -> list[str]:
    return [str(net) for net in nets]


# Supervision: a silence limit is a duration, null (the default applies, or none) or "off" (a camera: never).
_OFF = ("off", "false", "no", "never")


MIN_SILENCE, MAX_SILENCE = 1.0, 366 * 86400.0  # a camera's max_silence: seconds ... a year


def _silence(*, off: bool) -> Parser:
    parse_duration = duration(maximum=MAX_SILENCE)

    def parse(node: yaml.Node, ctx: Ctx, key: str) -> float | None:
        if is_null(node):
            return None
        if isinstance(node, yaml.ScalarNode) and str(node.value).strip().lower() in _OFF:
            return 0.0 if off else None
        value = float(parse_duration(node, ctx, key))
        if value < MIN_SILENCE:
            raise Invalid(f"must be at least {format_duration(MIN_SILENCE)}, or off")
        return value
    return parse


def _show_silence(value: float) -> str:
    return "off" if value == 0 else format_duration(value)


# --- sections -------------------------------------------------------------


@dataclass(frozen=True)
class SiteConfig:
    id: str = setting(string(pattern=SITE_ID, hint="may only contain a-z, 0-9 and -"), "demo-site")
    name: str = setting(string(), "Demo Site")
    # Schedules and snooze (issue 17): the zone accounts' schedules are read in; None in the file: the system's
    # zone, or UTC when it cannot be told (resolved in vmond.config.check).
    timezone: str = setting(timezone, None)


@dataclass(frozen=True)
class SmtpTlsConfig:
    certificate: Path | None = setting(path(), None, str)
    key: Path | None = setting(path(), None, str)
    implicit_tls_listen: HostPort | None = setting(hostport(nullable=True), None, str)
    min_version: str = setting(choice("1.0", "1.1", "1.2", "1.3"), "1.2")


@dataclass(frozen=True)
class SmtpConfig:
    listen: HostPort = setting(hostport(), HostPort("0.0.0.0", 2525), str)
    domain: str = setting(string(lower=True, check=is_host, hint="is not a domain name"), "monitor.local")
    auth: str = setting(choice("off", "accept-any", "per-camera"), "accept-any")
    max_message_size: int = setting(size(1), 25 * 10**6, show=format_size)
    max_connections: int = setting(integer(1), 64)
    # Sessions one client address may hold: an NVR mails for all its channels from one address, and 16 let a
    # 16-channel NVR alarm on every channel at once, while one host takes at most a quarter of the default 64.
    # At most max_connections (a default above a smaller max_connections follows it: vmond.config.check).
    max_connections_per_peer: int = setting(integer(1), 16)
    idle_timeout: float = setting(duration(), 60.0, show=format_duration)
    allow_networks: tuple[Network, ...] = setting(networks, tuple(ipaddress.ip_network(n) for n in _NETWORKS),
                                                  _networks)
    tls: SmtpTlsConfig = section()


@dataclass(frozen=True)
class WebTlsConfig:
    certificate: Path | None = setting(path(), None, str)
    key: Path | None = setting(path(), None, str)
    self_signed: bool = setting(boolean, False)


@dataclass(frozen=True)
class WebConfig:
    listen: HostPort = setting(hostport(), HostPort("0.0.0.0", 8080), str)
    tls: WebTlsConfig = section()
    metrics_public: bool = setting(boolean, False)
    allowed_hosts: tuple[str, ...] = setting(host_names, (), list)
    max_connections: int = setting(integer(1), 512)
    max_connections_per_peer: int = setting(integer(1), 64)
    # e.g. "https://monitor.example.com:8443", no trailing slash; None: MQTT messages carry relative media URLs only
    public_url: str | None = setting(public_url, None)
    # Reverse proxies (load balancers) whose X-Forwarded-For names the client (issue 19): the login throttle
    # counts that address instead of the proxy's, which every browser behind it shares.
    trusted_proxies: tuple[Network, ...] = setting(optional_networks, (), _networks)


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path = setting(path(nullable=False, file=False), Path("/var/lib/vmond"), str)
    max_media_size: int = setting(size(1), 10 * 10**9, show=format_size)
    min_free_space: int = setting(size(0), 10**9, show=format_size)
    retention: float = setting(duration(), 30 * 86400.0, show=format_duration)
    # Never shorter than retention (a default below it is raised to it: vmond.config.check).
    audit_retention: float = setting(duration(), 365 * 86400.0, show=format_duration)
    # None: SQLite, data_dir/vmond.db; a central station may use PostgreSQL (vmond.config.database).
    database: str | None = setting(database_url, None)
    database_password_file: Path | None = setting(path(), None, str)

    @property
    def postgresql(self) -> bool:
        return is_postgresql(self.database)

    def read_database_password(self) -> Secret | None:
        """The PostgreSQL password, read now from ``database_password_file`` (None: libpq's own ways, e.g. a
        client certificate or ``~/.pgpass``)."""
        if self.database_password_file is None:
            return None
        # One trailing newline is what `echo secret > file` adds, not part of it.
        return Secret(self.database_password_file.read_text(encoding="utf-8").removesuffix("\n"))


@dataclass(frozen=True)
class EventsConfig:
    coalesce_window: float = setting(duration(positive=False), 30.0, show=format_duration)
    # The wall's queue (issue 16): kind -> priority, 1 most urgent; kinds left out keep their default.
    priorities: dict[str, int] = setting(priorities(with_defaults=True), dict(DEFAULT_PRIORITIES))
    # An event still on the wall this long after it was received escalates (shown loud, and a sound).
    escalate_after: float = setting(duration(), 60.0, show=format_duration)


@dataclass(frozen=True)
class VideoConfig:
    enabled: bool = setting(boolean, True)
    fps: float = setting(positive_number, 2.0)
    max_width: int = setting(integer(16), 1280)
    encoder: str = setting(choice("auto", "libx264", "h264_v4l2m2m"), "auto")


@dataclass(frozen=True)
class LiveConfig:
    max_streams: int = setting(integer(1), 2)
    snapshot_on_alarm: bool = setting(boolean, False)


# --- supervision: cameras that fall silent, the appliance watching itself, snooze ------------------------------


@dataclass(frozen=True)
class SupervisionConfig:
    # A camera with no max_silence of its own raises camera_silent after this long without a mail; None: off.
    max_silence: float | None = setting(_silence(off=False), None, show=_show_silence)
    # The MQTT broker unreachable this long raises mqtt_down.
    mqtt_down_after: float = setting(duration(), 300.0, show=format_duration)
    # The longest a supervisor may snooze a camera for (and how long a snooze without an end lasts).
    max_snooze: float = setting(duration(), 24 * 3600.0, show=format_duration)


# --- alarms: how an alarm is closed ------------------------------------------


@dataclass(frozen=True)
class AlarmsConfig:
    # true: an alarm is resolved only with an outcome (a code); "Not classified" is no longer offered
    require_resolution_code: bool = setting(boolean, True)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting(choice("debug", "info", "warning", "error"), "info")


# --- notify: alarms sent to people through Apprise (its values: vmond.config.notifyvalues) --------------------


@dataclass(frozen=True)
class NotifyTargetConfig:
    name: str = setting(string())  # unique (vmond.config.check); what `vmond notify-test NAME` and the audit name
    url: Secret = setting(apprise_url)


@dataclass(frozen=True)
class NotifyConfig:
    targets: tuple[NotifyTargetConfig, ...] = list_of()  # the duty targets: every rule of `on` goes to each
    on: tuple[str, ...] = setting(notify_rules, NOTIFY_RULES, list)
    # An event still untouched (active) this long after it was received notifies once more ("unhandled").
    escalate_after: float = setting(duration(), 120.0, show=format_duration)


# --- accounts ---------------------------------------------------------------


@dataclass(frozen=True)
class ContactConfig:
    name: str = setting(string())
    # With email: at least one of them, see vmond.config.check.
    phone: str | None = setting(checked(phone_number), None)
    email: str | None = setting(checked(email_address), None)
    role: str | None = setting(string(nullable=True), None)
    priority: int = setting(integer(1), None)  # None in the file: the position in the list, see vmond.config.check
    # Notifications (issue 17): an Apprise URL that gets this account's alarms and supervision events; a secret.
    notify_url: Secret | None = setting(apprise_url, None)


@dataclass(frozen=True)
class CameraConfig:
    name: str = setting(string())
    # Reduced to the local part and checked against smtp.domain in vmond.config.check.
    smtp_address: str = setting(string(lower=True))
    smtp_password: Secret | None = setting(secret(), None)
    rtsp_url: Secret | None = setting(secret(schemes=("rtsp", "rtsps")), None)
    # Supervision: silent longer than this raises camera_silent; None: supervision.max_silence; 0 ("off"): never.
    max_silence: float | None = setting(_silence(off=True), None, show=_show_silence)


# --- accounts[].action_plan: the steps a guard works through on an account's alarm ------------------------

# Event kinds (``person``, ``intrusion`` ...) a step applies to; none: every event.
_event_kinds = names_from(KINDS, "an event kind", "kinds", "expected a list of event kinds, e.g. [person, intrusion]")


@dataclass(frozen=True)
class ActionStepConfig:
    text: str = setting(string())
    kinds: tuple[str, ...] = setting(_event_kinds, (), list)


@dataclass(frozen=True)
class AccountConfig:
    name: str = setting(string())
    address: str = setting(string(empty=True), "")
    notes: str = setting(string(empty=True), "")
    contacts: tuple[ContactConfig, ...] = list_of()
    cameras: tuple[CameraConfig, ...] = list_of()
    action_plan: tuple[ActionStepConfig, ...] = list_of()  # in order; copied onto each alarm when it is raised
    # The wall's queue: this account's own priorities per kind, over events.priorities.
    priorities: dict[str, int] = setting(priorities(with_defaults=False), {})
    # Schedules (issue 17): when the account is monitored, in site.timezone; None: around the clock.
    schedule: Schedule | None = setting(schedule, None, show_schedule)


@dataclass(frozen=True)
class Config:
    source: Path | None = not_a_key()  # the file it was loaded from
    site: SiteConfig = section()
    smtp: SmtpConfig = section()
    web: WebConfig = section()
    storage: StorageConfig = section()
    events: EventsConfig = section()
    video: VideoConfig = section()
    mqtt: MqttConfig = section()
    live: LiveConfig = section()
    alarms: AlarmsConfig = section()
    supervision: SupervisionConfig = section()
    logging: LoggingConfig = section()
    notify: NotifyConfig = section()  # notifications (issue 17)
    central: CentralConfig = section()  # a central station (issue 18)
    accounts: tuple[AccountConfig, ...] = list_of()

    def cameras(self) -> Iterator[tuple[AccountConfig, CameraConfig]]:
        """Every declared camera with the account it belongs to."""
        for account in self.accounts:
            for camera in account.cameras:
                yield account, camera

    def find_camera(self, local_part: str) -> tuple[AccountConfig, CameraConfig] | None:
        """The declared camera whose ``smtp_address`` is ``local_part`` (any case)."""
        wanted = local_part.lower()
        return next(((a, c) for a, c in self.cameras() if c.smtp_address == wanted), None)


# --- the key table derived from them ----------------------------------------

SECTIONS: Table = table_of(Config)


def key_paths(table: Table = SECTIONS, prefix: str = "") -> list[str]:
    """Every key and section as a dotted path, lists written as ``accounts[]``."""
    result = []
    for name, spec in table.items():
        dotted = f"{prefix}{name}"
        result.append(dotted)
        if isinstance(spec, ListOf):
            result += key_paths(spec.table, f"{dotted}[].")
        elif isinstance(spec, Section):
            result += key_paths(spec.table, f"{dotted}.")
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
