"""The configuration's broker links (declared like every section, see :mod:`vmond.config.schema`): the
appliance's ``mqtt`` section and a central station's ``central`` section, whose ``central.mqtt`` is the same
connection without what an appliance publishes for itself (issue 18).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from vmond.config.spec import list_of, section, setting
from vmond.config.types import Secret, format_duration, format_size, is_host
from vmond.config.values import boolean, choice, duration, integer, path, secret, size, string

SITE_ID = re.compile(r"[a-z0-9-]+")
MAX_SITE_ID = 100
# A central node's name (issue 19): part of an MQTT client id and of lease names, so a short, safe token.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_NODE_HINT = "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _topic(value: str) -> bool:
    return not (set(value) & {"+", "#", "\0"} or value.startswith("/") or value.endswith("/"))


_TOPIC_HINT = "must be an MQTT topic without +, # or a leading/trailing /"
@dataclass(frozen=True)
class MqttTlsConfig:
    enabled: bool = setting(boolean, False)
    ca_file: Path | None = setting(path(), None, str)
    certificate: Path | None = setting(path(), None, str)
    key: Path | None = setting(path(), None, str)
    insecure: bool = setting(boolean, False)


@dataclass(frozen=True)
class MqttLinkConfig:
    """The connection to a broker: the appliance's ``mqtt`` section and a central's ``central.mqtt``."""

    host: str = setting(string(check=is_host, hint="is not a host name or address"), "localhost")
    port: int = setting(integer(1, 65535), 1883)
    username: str | None = setting(string(nullable=True), None)
    password: Secret | None = setting(secret(), None)
    password_file: Path | None = setting(path(), None, str)
    client_id: str = setting(string(nullable=True), None)  # None in the file: vmond-<site.id>, see vmond.config.check
    # MQTT carries keepalive as a 16-bit number of seconds.
    keepalive: float = setting(duration(maximum=65535), 30.0, show=format_duration)
    tls: MqttTlsConfig = section()
    topic_prefix: str = setting(string(check=_topic, hint=_TOPIC_HINT), "vmond")

    def read_password(self) -> Secret | None:
        """The password, from ``password`` or read now from ``password_file``."""
        return _read_secret(self.password, self.password_file)


@dataclass(frozen=True)
class MqttConfig(MqttLinkConfig):
    enabled: bool = setting(boolean, False)
    outbox_max_messages: int = setting(integer(1), 100_000)
    outbox_max_age: float = setting(duration(), 7 * 86400.0, show=format_duration)
    embed_thumbnail: bool = setting(boolean, False)
    homeassistant_discovery: bool = setting(boolean, False)
    homeassistant_prefix: str = setting(string(check=_topic, hint=_TOPIC_HINT), "homeassistant")
    # Commands from a central station (issue 18): signed with command_secret, refused when older than command_max_age.
    commands: bool = setting(boolean, False)
    command_secret: Secret | None = setting(secret(), None)
    command_secret_file: Path | None = setting(path(), None, str)
    command_max_age: float = setting(duration(maximum=30 * 86400), 3600.0, show=format_duration)
    # What a central station receives (issue 18): media on <prefix>/<site>/media/<id>, eagerly per publish_media
    # (or on its request), each file at most max_media_size.
    publish_media: str = setting(choice("none", "thumbnails", "pictures", "all"), "none")
    max_media_size: int = setting(size(1), 4 * 10**6, show=format_size)

    def read_command_secret(self) -> Secret | None:
        """The command secret, from ``command_secret`` or read now from ``command_secret_file``."""
        return _read_secret(self.command_secret, self.command_secret_file)



# --- central: this vmond is a central station mirroring appliances over MQTT (issue 18) -----------------------


@dataclass(frozen=True)
class CentralSiteConfig:
    id: str = setting(string(pattern=SITE_ID, hint="may only contain a-z, 0-9 and -"))
    name: str | None = setting(string(nullable=True), None)  # None: the name the site's config message gives
    command_secret: Secret | None = setting(secret(), None)  # None: central.command_secret
    command_secret_file: Path | None = setting(path(), None, str)

    def read_command_secret(self) -> Secret | None:
        """This site's command secret, from ``command_secret`` or read now from ``command_secret_file``."""
        return _read_secret(self.command_secret, self.command_secret_file)


@dataclass(frozen=True)
class CentralLinkConfig(MqttLinkConfig):
    """``central.mqtt``: the broker link, and the shared subscription's group the central nodes share (issue 19)."""

    share_group: str = setting(string(pattern=NODE_NAME, hint=_NODE_HINT), "vmond-central")
    # Accepted so that a copy of the appliance's mqtt section reads; a central is always linked (false: an error).
    enabled: bool = setting(boolean, True)


@dataclass(frozen=True)
class CentralConfig:
    enabled: bool = setting(boolean, False)  # true when the file has a central: section (vmond.config.check)
    mqtt: CentralLinkConfig = section()  # the broker the sites publish to; client_id defaults to vmond-<site.id>
    # This node's name among the central nodes (issue 19); None in the file: the host name (vmond.config.check).
    node: str = setting(string(pattern=NODE_NAME, hint=_NODE_HINT, nullable=True), None)
    # The sites served; `sites: auto` in the file sets auto_sites instead: any site that announces itself.
    sites: tuple[CentralSiteConfig, ...] = list_of()
    auto_sites: bool = setting(boolean, False)
    command_secret: Secret | None = setting(secret(), None)  # the secret of sites that name none of their own
    command_secret_file: Path | None = setting(path(), None, str)
    site_silence: float = setting(duration(), 300.0, show=format_duration)  # then a site is offline
    media_cache: int = setting(size(1 << 20), 1 << 30, show=format_size)  # pictures and clips fetched from sites

    def read_command_secret(self) -> Secret | None:
        """The default command secret, from ``command_secret`` or read now from ``command_secret_file``."""
        return _read_secret(self.command_secret, self.command_secret_file)

    def link(self, mqtt: MqttConfig) -> MqttConfig:
        """*mqtt* (the appliance's section) turned into the central's own link: ``central.mqtt``'s connection,
        forwarding on, and nothing an appliance publishes for itself (commands, media, discovery)."""
        link = {field.name: getattr(self.mqtt, field.name) for field in dataclasses.fields(MqttLinkConfig)}
        return dataclasses.replace(mqtt, enabled=True, commands=False, publish_media="none",
                                   homeassistant_discovery=False, embed_thumbnail=False, **link)

    def find_site(self, site_id: str) -> CentralSiteConfig | None:
        return next((site for site in self.sites if site.id == site_id), None)

    def serves(self, site_id: str) -> bool:
        """Whether messages of *site_id* are mirrored: a listed site, or with ``sites: auto`` any whose id is one
        a site could have."""
        if self.auto_sites:
            return len(site_id) <= MAX_SITE_ID and SITE_ID.fullmatch(site_id) is not None
        return self.find_site(site_id) is not None


def _read_secret(secret: Secret | None, file: Path | None) -> Secret | None:
    # One trailing newline is what `echo secret > file` adds, not part of it.
    if file is None:
        return secret
    return Secret(file.read_text(encoding="utf-8").removesuffix("\n"))
