"""Loading and validating the vmond configuration file.

The file is YAML. It is composed into nodes (never loaded with ``yaml.load``)
and walked by :mod:`vmond.config.check` against the key table derived from the
dataclasses of :mod:`vmond.config.schema`, so that every problem in a file is
reported at once as ``FILE:LINE: dotted.path: message``. The result is a tree of
those frozen dataclasses, one per section, whose fields are named exactly like
the YAML keys and declare them (parser, default, dump format) in one place. The
dataclasses and the value types (:class:`Secret`, :class:`HostPort`, sizes,
durations, from :mod:`vmond.config.types`) are re-exported here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from vmond.config.check import check_document
from vmond.config.links import MqttConfig, MqttTlsConfig
from vmond.config.schema import (
    SECTIONS,
    AccountConfig,
    CameraConfig,
    Config,
    ContactConfig,
    EventsConfig,
    LiveConfig,
    LoggingConfig,
    SiteConfig,
    SmtpConfig,
    SmtpTlsConfig,
    StorageConfig,
    VideoConfig,
    WebConfig,
    WebTlsConfig,
)
from vmond.config.spec import Key, ListOf, Section, Table, build
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
from vmond.config.values import Ctx

__all__ = [
    "AccountConfig", "CameraConfig", "Config", "ConfigError", "ContactConfig", "EventsConfig",
    "HostPort", "LiveConfig", "LoggingConfig", "MqttConfig", "MqttTlsConfig", "Problem",
    "Secret", "SiteConfig", "SmtpConfig", "SmtpTlsConfig", "StorageConfig", "VideoConfig",
    "WebConfig", "WebTlsConfig", "default_config", "describe", "dump_masked", "format_duration",
    "format_size", "load_config", "parse_config_text", "parse_duration", "parse_hostport",
    "parse_size",
]


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
    if config.central.enabled:
        sites = "any site" if config.central.auto_sites else f"{len(config.central.sites)} site(s)"
        return (f"ok: central station {config.site.id}, {sites}, "
                f"mqtt {HostPort(config.central.mqtt.host, config.central.mqtt.port)}, web {config.web.listen}, "
                f"data {config.storage.data_dir}")
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
    return yaml.safe_dump(_plain_section(config, SECTIONS), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)


def _plain_section(section: Any, table: Table) -> dict[str, Any]:
    return {name: _plain(getattr(section, name), spec) for name, spec in table.items()}


def _plain(value: Any, spec: Key | Section | ListOf) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(spec, Section):
        return _plain_section(value, spec.table)
    if isinstance(spec, ListOf):
        return [_plain_section(item, spec.table) for item in value]
    if spec.show is not None and value is not None:
        return spec.show(value)
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
    return build(Config, SECTIONS, values, source=source)

