"""Loading and validating the vmond configuration file.

The file is YAML. It is composed into nodes (never loaded with ``yaml.load``)
and walked against the key tables in :mod:`vmond.config.schema` by
:mod:`vmond.config.check`, so that every problem in a file is reported at once
as ``FILE:LINE: dotted.path: message``. The result is a tree of frozen
dataclasses, one per section, whose fields are named exactly like the YAML
keys. Value types (:class:`Secret`, :class:`HostPort`, sizes, durations) come
from :mod:`vmond.config.types` and are re-exported here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from vmond.config.check import check_document
from vmond.config.schema import SECTIONS, Key, ListOf, Table
from vmond.config.types import (
    MASK,
    HostPort,
    Problem,
    Secret,
    format_duration,
    format_size,
    parse_duration,
    parse_hostport,
    parse_size,
)
from vmond.config.values import Ctx, Network

__all__ = [
    "AccountConfig", "CameraConfig", "Config", "ConfigError", "ContactConfig", "EventsConfig",
    "HostPort", "LiveConfig", "LoggingConfig", "MqttConfig", "MqttTlsConfig", "Problem",
    "Secret", "SiteConfig", "SmtpConfig", "SmtpTlsConfig", "StorageConfig", "VideoConfig",
    "WebConfig", "WebTlsConfig", "default_config", "describe", "dump_masked", "format_duration",
    "format_size", "load_config", "parse_config_text", "parse_duration", "parse_hostport",
    "parse_size",
]

@dataclass(frozen=True)
class SiteConfig:
    id: str
    name: str


@dataclass(frozen=True)
class SmtpTlsConfig:
    certificate: Path | None
    key: Path | None
    implicit_tls_listen: HostPort | None
    min_version: str


@dataclass(frozen=True)
class SmtpConfig:
    listen: HostPort
    domain: str
    auth: str
    max_message_size: int
    max_connections: int
    max_connections_per_peer: int
    idle_timeout: float
    allow_networks: tuple[Network, ...]
    tls: SmtpTlsConfig


@dataclass(frozen=True)
class WebTlsConfig:
    certificate: Path | None
    key: Path | None
    self_signed: bool


@dataclass(frozen=True)
class WebConfig:
    listen: HostPort
    tls: WebTlsConfig
    metrics_public: bool
    allowed_hosts: tuple[str, ...]
    max_connections: int
    max_connections_per_peer: int
    public_url: str | None  # e.g. "https://monitor.example.com:8443", no trailing slash


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path
    max_media_size: int
    min_free_space: int
    retention: float
    audit_retention: float  # never shorter than retention (a default below it is raised to it)


@dataclass(frozen=True)
class EventsConfig:
    coalesce_window: float


@dataclass(frozen=True)
class VideoConfig:
    enabled: bool
    fps: float
    max_width: int
    encoder: str


@dataclass(frozen=True)
class MqttTlsConfig:
    enabled: bool
    ca_file: Path | None
    certificate: Path | None
    key: Path | None
    insecure: bool


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool
    host: str
    port: int
    username: str | None
    password: Secret | None
    password_file: Path | None
    client_id: str
    keepalive: float
    tls: MqttTlsConfig
    topic_prefix: str
    outbox_max_messages: int
    outbox_max_age: float
    embed_thumbnail: bool
    homeassistant_discovery: bool
    homeassistant_prefix: str

    def read_password(self) -> Secret | None:
        """The password, from ``password`` or read now from ``password_file``."""
        if self.password_file is None:
            return self.password
        # One trailing newline is what `echo secret > file` adds, not part of it.
        return Secret(self.password_file.read_text(encoding="utf-8").removesuffix("\n"))


@dataclass(frozen=True)
class LiveConfig:
    max_streams: int
    snapshot_on_alarm: bool


@dataclass(frozen=True)
class LoggingConfig:
    level: str


@dataclass(frozen=True)
class ContactConfig:
    name: str
    phone: str | None
    email: str | None
    role: str | None
    priority: int


@dataclass(frozen=True)
class CameraConfig:
    name: str
    smtp_address: str
    smtp_password: Secret | None
    rtsp_url: Secret | None


@dataclass(frozen=True)
class AccountConfig:
    name: str
    address: str
    notes: str
    contacts: tuple[ContactConfig, ...]
    cameras: tuple[CameraConfig, ...]


@dataclass(frozen=True)
class Config:
    source: Path | None
    site: SiteConfig
    smtp: SmtpConfig
    web: WebConfig
    storage: StorageConfig
    events: EventsConfig
    video: VideoConfig
    mqtt: MqttConfig
    live: LiveConfig
    logging: LoggingConfig
    accounts: tuple[AccountConfig, ...]

    def cameras(self) -> Iterator[tuple[AccountConfig, CameraConfig]]:
        """Every declared camera with the account it belongs to."""
        for account in self.accounts:
            for camera in account.cameras:
                yield account, camera

    def find_camera(self, local_part: str) -> tuple[AccountConfig, CameraConfig] | None:
        """The declared camera whose ``smtp_address`` is ``local_part`` (any case)."""
        wanted = local_part.lower()
        return next(((a, c) for a, c in self.cameras() if c.smtp_address == wanted), None)


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


# --- public functions -----------------------------------------------------


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> Config:
    """Load and validate a configuration file; raise ConfigError listing every problem.

    Relative paths in the file resolve against the file's directory. With
    ``check_files`` (the default) certificate, key and password files must be
    readable now, so an installer learns about them before the daemon starts.
    """
    name = os.fspath(path)
    file = Path(name).absolute()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(name, 0, "(file)", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(name, line, "(file)", "not UTF-8 text")]) from None
    return _parse(text, name, file.parent, file, check_files)


def parse_config_text(text: str, source: str = "<string>", base_dir: Path | None = None,
                      *, check_files: bool = True) -> Config:
    """Parse configuration text; relative paths resolve against ``base_dir`` (default: cwd)."""
    return _parse(text, source, Path(base_dir or Path.cwd()), None, check_files)


@functools.cache  # Config is immutable, so one shared instance is safe
def default_config() -> Config:
    """The built-in defaults, with no accounts."""
    return _parse("", "<defaults>", Path("/"), None, False)


def describe(config: Config) -> str:
    """A one-line summary of a valid configuration, for ``vmond check-config``."""
    cameras = sum(len(account.cameras) for account in config.accounts)
    mqtt = HostPort(config.mqtt.host, config.mqtt.port) if config.mqtt.enabled else "off"
    return (f"ok: site {config.site.id}, {len(config.accounts)} account(s), {cameras} camera(s), "
            f"smtp {config.smtp.listen}, web {config.web.listen}, "
            f"data {config.storage.data_dir}, mqtt {mqtt}")


def dump_masked(config: Config) -> str:
    """The effective configuration as YAML, secrets shown as ``********``.

    Sizes and durations are written with the largest exact unit, so the output
    can be read back (except for the masked secrets).
    """
    return yaml.safe_dump(_plain(config, SECTIONS), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)


def _plain(value: Any, spec: Key | ListOf | Table | None) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(spec, Key) and spec.show is not None and value is not None:
        return spec.show(value)
    if is_dataclass(value) and isinstance(spec, dict):
        return {f.name: _plain(getattr(value, f.name), spec.get(f.name))
                for f in fields(value) if f.name != "source"}
    if isinstance(spec, ListOf):
        return [_plain(item, spec.table) for item in value]
    return value


# --- parsing ---------------------------------------------------------------


def _parse(text: str, file: str, base_dir: Path, source: Path | None, check_files: bool) -> Config:
    ctx = Ctx(file, base_dir.absolute(), check_files)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ConfigError([Problem(file, mark.line + 1 if mark else 0, "(yaml)", message)]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError([Problem(file, 0, "(yaml)", str(exc) or "nested too deeply")]) from None
    values = check_document(root, ctx)
    if ctx.problems:
        raise ConfigError(sorted(ctx.problems, key=lambda problem: problem.line))
    return _build(values, source)


# --- building the dataclasses ---------------------------------------------


def _build(values: dict[str, Any], source: Path | None) -> Config:
    v = values
    mqtt = dict(v["mqtt"], tls=MqttTlsConfig(**v["mqtt"]["tls"]))
    mqtt["client_id"] = mqtt["client_id"] or f"vmond-{v['site']['id']}"
    return Config(
        source=source,
        site=SiteConfig(**v["site"]),
        smtp=SmtpConfig(**dict(v["smtp"], tls=SmtpTlsConfig(**v["smtp"]["tls"]))),
        web=WebConfig(**dict(v["web"], tls=WebTlsConfig(**v["web"]["tls"]))),
        storage=StorageConfig(**dict(v["storage"], audit_retention=max(v["storage"]["audit_retention"],
                                                                        v["storage"]["retention"]))),
        events=EventsConfig(**v["events"]),
        video=VideoConfig(**v["video"]),
        mqtt=MqttConfig(**mqtt),
        live=LiveConfig(**v["live"]),
        logging=LoggingConfig(**v["logging"]),
        accounts=tuple(
            AccountConfig(**dict(
                account,
                contacts=tuple(ContactConfig(**c) for c in account["contacts"]),
                cameras=tuple(CameraConfig(**c) for c in account["cameras"]),
            ))
            for account in v["accounts"]
        ),
    )
