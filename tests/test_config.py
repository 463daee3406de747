"""Tests for vmond.config: defaults, the shipped files, and problem reports."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from vmond.config import (
    Config,
    ConfigError,
    HostPort,
    Problem,
    Secret,
    default_config,
    describe,
    dump_masked,
    format_duration,
    format_size,
    load_config,
    parse_config_text,
    parse_duration,
    parse_hostport,
    parse_size,
    spec,
)
from vmond.config.schema import key_paths
from vmond.config.values import integer

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "config" / "vmond.yaml"
DEV = ROOT / "config" / "dev.yaml"
SECTIONS = ("site", "smtp", "web", "storage", "events", "video", "mqtt", "live", "logging")


def parse(text: str, **kwargs: object) -> Config:
    return parse_config_text(textwrap.dedent(text), source="vmond.yaml", **kwargs)


def problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    return [str(problem) for problem in info.value.problems]


def only_problem(text: str, **kwargs: object) -> str:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


def commented_account_example() -> str:
    """The `# accounts:` example at the end of config/vmond.yaml, uncommented."""
    lines = PRODUCTION.read_text().splitlines()
    start = lines.index("# accounts:")
    return "\n".join(line[2:] for line in lines[start:] if line.startswith("#"))


def commented_list_example(opening: str) -> list[dict[str, object]]:
    """The commented example under the line *opening* of config/vmond.yaml, as the list it shows."""
    lines = PRODUCTION.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(opening)) + 1
    example = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        example.append(line[4:])
    return yaml.safe_load("\n".join(example))  # type: ignore[no-any-return]


def commented_targets_example() -> list[dict[str, object]]:
    """The commented `notify.targets` example in config/vmond.yaml, as the list it shows."""
    return commented_list_example("  targets: []                   # the duty targets: none by default. Example:")


def is_mapping_value(path: str) -> bool:
    """A key whose value is a mapping of the user's own keys (``events.priorities``), not a section."""
    paths = key_paths()
    return path in paths and not any(p.startswith((f"{path}.", f"{path}[].")) for p in paths)


def yaml_key_paths(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        paths = set()
        for key, value in node.items():
            paths.add(prefix + key)
            if not is_mapping_value(prefix + key):
                paths |= yaml_key_paths(value, f"{prefix}{key}.")
        return paths
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return set().union(*(yaml_key_paths(item, prefix[:-1] + "[].") for item in node))
    return set()


# --- defaults and shipped files -------------------------------------------


def test_defaults() -> None:
    config = default_config()
    assert config.source is None
    assert config.site.id == "demo-site"
    assert config.smtp.listen == HostPort("0.0.0.0", 2525)
    assert config.smtp.auth == "accept-any"
    assert config.smtp.max_message_size == 25_000_000
    assert ipaddress.ip_network("fe80::/10") in config.smtp.allow_networks
    assert len(config.smtp.allow_networks) == 7
    assert config.smtp.tls.certificate is None
    assert config.web.listen == HostPort("0.0.0.0", 8080)
    assert config.web.public_url is None
    assert config.storage.data_dir == Path("/var/lib/vmond")
    assert config.storage.max_media_size == 10_000_000_000
    assert config.storage.min_free_space == 1_000_000_000
    assert config.storage.retention == 30 * 86400
    assert config.events.coalesce_window == 30.0
    assert config.video.fps == 2.0 and config.video.encoder == "auto"
    assert config.mqtt.client_id == "vmond-demo-site"
    assert config.mqtt.keepalive == 30.0 and not config.mqtt.tls.insecure
    assert config.live.max_streams == 2
    assert config.logging.level == "info"
    assert config.accounts == ()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "smtp:\nweb:\n  tls:\n"])
def test_empty_file_and_empty_sections_give_defaults(text: str) -> None:
    assert parse(text) == default_config()


def test_production_file_equals_defaults() -> None:
    config = load_config(PRODUCTION)
    assert config.source == PRODUCTION
    defaults = default_config()
    for section in SECTIONS:
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.accounts == ()


def test_production_file_lists_every_key() -> None:
    document = yaml.safe_load(PRODUCTION.read_text())
    document["accounts"] = yaml.safe_load(commented_account_example())["accounts"]
    document["notify"]["targets"] = commented_targets_example()
    document["central"]["sites"] = commented_list_example("  sites: []")
    assert yaml_key_paths(document) == set(key_paths())


def test_production_account_example_is_valid() -> None:
    config = parse(commented_account_example())
    (account,) = config.accounts
    assert account.name == "Demo Customer"
    assert account.contacts[0].phone == "+15550100"
    assert account.cameras[0].smtp_address == "camera-front"


def test_dev_file(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    shutil.copy(DEV, var / "vmond.yaml")
    config = load_config(var / "vmond.yaml")
    assert config.storage.data_dir == var
    assert config.smtp.listen == HostPort("127.0.0.1", 2525)
    assert config.web.listen == HostPort("127.0.0.1", 8080)
    assert config.smtp.domain == "monitor.local"
    (account,) = config.accounts
    assert account.name == "Demo Customer"
    (contact,) = account.contacts
    assert (contact.name, contact.phone, contact.role, contact.priority) == (
        "Jane Keyholder", "+15550100", "keyholder", 1)
    (camera,) = account.cameras
    assert (camera.name, camera.smtp_address) == ("Demo Camera", "camera-demo01")
    assert config.find_camera("CAMERA-demo01") == (account, camera)
    assert describe(config) == (
        f"ok: site demo-site, 1 account(s), 1 camera(s), smtp 127.0.0.1:2525, "
        f"web 127.0.0.1:8080, data {var}, mqtt off")


def test_dev_file_only_overrides_defaults() -> None:
    defaults = yaml.safe_load(dump_masked(default_config()))
    overrides = yaml.safe_load(DEV.read_text())
    same = {f"{section}.{key}" for section, keys in overrides.items() if section != "accounts"
            for key, value in keys.items() if defaults[section][key] == value}
    # Kept on purpose: the demo camera's full address depends on it.
    assert same == {"smtp.domain"}


# --- problem reports ------------------------------------------------------


def test_every_problem_is_reported_with_its_line() -> None:
    found = problems("""\
        site:
          id: Demo_Site
        smtp:
          listen: "0.0.0.0:99999"
          auth: maybe
          max_message_size: 25 parsecs
          allow_networks:
            - 10.0.0.0/8
            - 300.1.2.3/8
        storage:
          retention: -1d
        video:
          enabled: yes
        live:
          max_streams: 0
        """)
    prefixes = [
        "vmond.yaml:2: site.id: 'Demo_Site' may only contain",
        "vmond.yaml:4: smtp.listen: port '99999' is not a number from 0 to 65535",
        "vmond.yaml:5: smtp.auth: 'maybe' is not one of: off, accept-any, per-camera",
        "vmond.yaml:6: smtp.max_message_size: unknown size unit 'parsecs'",
        "vmond.yaml:9: smtp.allow_networks[1]: not a network",
        "vmond.yaml:11: storage.retention: invalid duration '-1d'",
        "vmond.yaml:13: video.enabled: write true or false instead of 'yes'",
        "vmond.yaml:15: live.max_streams: must be at least 1, not 0",
    ]
    assert len(found) == len(prefixes), found
    for problem, prefix in zip(found, prefixes, strict=True):
        assert problem.startswith(prefix), (problem, prefix)


def test_config_error_text_is_one_problem_per_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse("site:\n  id: X\nvideo:\n  fps: 0\n")
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert info.value.problems[0] == Problem(
        "vmond.yaml", 2, "site.id", "'X' may only contain a-z, 0-9 and -")
    assert str(info.value.problems[0]) == "vmond.yaml:2: site.id: 'X' may only contain a-z, 0-9 and -"


@pytest.mark.parametrize(("text", "expected"), [
    ("smpt:\n  listen: ':25'\n", "vmond.yaml:1: smpt: unknown key; did you mean `smtp`?"),
    ("smtp:\n  max_mesage_size: 1MB\n",
     "vmond.yaml:2: smtp.max_mesage_size: unknown key; did you mean `max_message_size`?"),
    ("smtp:\n  data_dir: /srv\n",
     "vmond.yaml:2: smtp.data_dir: unknown key here; did you mean `storage.data_dir`?"),
    ("web:\n  certificate: c.pem\n",
     "vmond.yaml:2: web.certificate: unknown key here; did you mean `web.tls.certificate`?"),
    ("accounts:\n  - name: A\n    cameras:\n      - name: C\n        smtp_adress: c\n",
     "vmond.yaml:5: accounts[0].cameras[0].smtp_adress: unknown key; did you mean `smtp_address`?"),
    ("accounts:\n  - name: A\n    smtp_address: a\n",
     ("vmond.yaml:3: accounts[0].smtp_address: unknown key here; did you mean "
     "`accounts[].cameras[].smtp_address`?")),
    ("tls: {}\n", ("vmond.yaml:1: tls: unknown key here; did you mean `smtp.tls`, `web.tls`, `mqtt.tls` or "
                  "`central.mqtt.tls`?")),
    ("accounts:\n  - name: A\n    contacts:\n      - {name: B, phone: '1', colour: red}\n",
     ("vmond.yaml:4: accounts[0].contacts[0].colour: unknown key; known keys here: "
     "name, phone, email, role, priority, notify_url")),
])
def test_unknown_keys_suggest(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_duplicate_key() -> None:
    assert only_problem("smtp:\n  auth: off\n  domain: a.example\n  auth: per-camera\n") == (
        "vmond.yaml:4: smtp.auth: duplicate key (first on line 2)")
    assert only_problem("web: {}\nweb: {}\n") == "vmond.yaml:2: web: duplicate key (first on line 1)"


@pytest.mark.parametrize(("text", "line", "message"), [
    ("smtp:\n  listen: [1, 2\nweb: {}\n", 3,
     "expected ',' or ']', but got ':' (while parsing a flow sequence on line 2)"),
    ("site:\n  id: a\n   name: b\n", 3, "mapping values are not allowed here"),
    ("site: {id: a}\n---\nweb: {}\n", 2, "but found another document"),
    ("site:\n\tid: a\n", 2, "found character '\\t' that cannot start any token"),
])
def test_yaml_syntax_error_line(text: str, line: int, message: str) -> None:
    problem = only_problem(text)
    assert problem.startswith(f"vmond.yaml:{line}: (yaml): {message}"), problem


@pytest.mark.parametrize(("text", "found"), [("- a\n- b\n", "a list"), ("just words\n", "a string")])
def test_top_level_must_be_a_mapping(text: str, found: str) -> None:
    assert only_problem(text).startswith(
        f"vmond.yaml:1: (top level): expected a mapping of sections (site:, smtp:, ...), found {found}")


@pytest.mark.parametrize(("text", "expected"), [
    ("smtp: 5\n", "vmond.yaml:1: smtp: expected a mapping, found a whole number"),
    ("smtp:\n  max_connections: '64'\n",
     "vmond.yaml:2: smtp.max_connections: expected a whole number, found a string ('64')"),
    ("video:\n  enabled: 'true'\n", "vmond.yaml:2: video.enabled: write true or false without quotes"),
    ("video:\n  enabled: 1\n", "vmond.yaml:2: video.enabled: expected true or false, found a whole number"),
    ("video:\n  fps: .nan\n", "vmond.yaml:2: video.fps: must be a number greater than 0, not .nan"),
    ("site:\n  name:\n", "vmond.yaml:2: site.name: expected a string, found nothing (null)"),
    ("smtp:\n  allow_networks: []\n",
     "vmond.yaml:2: smtp.allow_networks: list at least one network; no camera could connect"),
    ("smtp:\n  allow_networks: 10.0.0.0/8\n", "vmond.yaml:2: smtp.allow_networks: expected a list of networks"),
    ("smtp:\n  domain: 'bad domain'\n", "vmond.yaml:2: smtp.domain: 'bad domain' is not a domain name"),
    ("mqtt:\n  keepalive: 1d\n", "vmond.yaml:2: mqtt.keepalive: must be at most 65535s"),
    ("mqtt:\n  topic_prefix: /vmond\n", "vmond.yaml:2: mqtt.topic_prefix: '/vmond' must be an MQTT topic"),
    ("mqtt:\n  port: 0\n", "vmond.yaml:2: mqtt.port: must be from 1 to 65535, not 0"),
    ("logging:\n  level: verbose\n",
     "vmond.yaml:2: logging.level: 'verbose' is not one of: debug, info, warning, error"),
    ("storage:\n  retention: 0s\n", "vmond.yaml:2: storage.retention: must be longer than 0s"),
    ("storage:\n  data_dir: ''\n", "vmond.yaml:2: storage.data_dir: must be a file name"),
    ("mqtt:\n  password_file: \"a\\0b\"\n", "vmond.yaml:2: mqtt.password_file: must be a file name"),
    ("site: !!python/object:os.system {}\n", "vmond.yaml:1: (yaml): unsupported tag"),
    ("smtp:\n  max_connections: !!int many\n", "vmond.yaml:2: smtp.max_connections: 'many' is not a valid int"),
    ("base: &b {name: A}\n", "vmond.yaml:1: base: unknown key"),
    ("accounts:\n  - <<: {name: A}\n", "vmond.yaml:2: accounts[0].<<: merge keys (<<) are not supported"),
    ("accounts: {name: A}\n", "vmond.yaml:1: accounts: expected a list, found a mapping"),
    ("accounts:\n  - Demo\n", "vmond.yaml:2: accounts[0]: expected a mapping, found a string ('Demo')"),
    ("accounts:\n  - address: x\n", "vmond.yaml:2: accounts[0]: missing required key `name`"),
])
def test_wrong_values(text: str, expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems(text)), problems(text)


@pytest.mark.parametrize(("written", "kept"), [
    ("https://monitor.example.com:8443", "https://monitor.example.com:8443"),
    ("https://Monitor.Example.COM:8443/", "https://monitor.example.com:8443"),
    ("HTTP://10.0.0.5", "http://10.0.0.5"),
    ("https://[fd00::1]:8443/vmond/", "https://[fd00::1]:8443/vmond"),
    ("https://example.com/Alarm/Site-1//", "https://example.com/Alarm/Site-1"),
    ("null", None),
])
def test_public_url_is_normalised(written: str, kept: str | None) -> None:
    assert parse(f"web:\n  public_url: {written}\n").web.public_url == kept


@pytest.mark.parametrize(("written", "message"), [
    ("ftp://monitor.example.com", "must start with http:// or https://"),
    ("monitor.example.com:8443", "must start with http:// or https://"),
    ("''", "must start with http:// or https://"),
    ("https://", "must name the host"),
    ("https://monitor_1.example.com", "'monitor_1.example.com' is not a host name or address"),
    ("https://admin:secret@monitor.example.com", "must not hold a user name or password"),
    ("https://monitor.example.com/?site=1", "must not have a query (?...) or fragment (#...)"),
    ("https://monitor.example.com/?", "must not have a query"),
    ("'https://monitor.example.com/#wall'", "must not have a query"),
    ("https://monitor.example.com:http", "is not a URL"),
    ("https://monitor.example.com:70000", "is not a URL"),
    ("https://monitor.example.com:0", "port 0 is not a port others can reach"),
    ("'https://monitor.example.com/a b'", "must be a URL without spaces or control characters"),
    ("[https://monitor.example.com]", "expected a string, found a list"),
])
def test_public_url_problems(written: str, message: str) -> None:
    assert only_problem(f"web:\n  public_url: {written}\n").startswith(f"vmond.yaml:2: web.public_url: {message}")


def test_yaml_words_are_read_as_written() -> None:
    config = parse("""\
        smtp:
          auth: off
        logging:
          level: WARNING
        accounts:
          - name: no
            address: 2024-01-01
            contacts:
              - {name: Jane, phone: +15550100}
              - {name: Bob, phone: 0044 20 7946 0000, priority: 1}
            cameras:
              - {name: C, smtp_address: 0123, smtp_password: 0123}
        """)
    assert config.smtp.auth == "off"
    assert config.logging.level == "warning"
    (account,) = config.accounts
    assert (account.name, account.address) == ("no", "2024-01-01")
    assert [(c.phone, c.priority) for c in account.contacts] == [("+15550100", 1), ("0044 20 7946 0000", 1)]
    assert account.cameras[0].smtp_address == "0123"
    assert account.cameras[0].smtp_password == Secret("0123")


# --- value syntax ---------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("512", 512), (512, 512), ("1B", 1), ("1KB", 1000), ("25MB", 25_000_000),
    ("10GB", 10_000_000_000), ("2TB", 2 * 10**12), ("1KiB", 1024), ("1MiB", 1024**2),
    ("1GiB", 1024**3), ("1TiB", 1024**4), ("25mb", 25_000_000), ("1.5GB", 1_500_000_000),
    (" 25 MB ", 25_000_000), ("0.5KiB", 512),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1", "-1MB", "25 M", "25Mb/s", "1.0001KB", "1e6", "1,000"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|bytes"):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("30", 30.0), (30, 30.0), (1.5, 1.5), ("0.5", 0.5), ("30s", 30.0), ("5m", 300.0),
    ("2h", 7200.0), ("30d", 2_592_000.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1.5h", 5400.0),
    ("0s", 0.0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-5s", "5M", "5 minutes", "1w", "5m30", "1e3", "PT5M"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_size_and_duration_formats_round_trip() -> None:
    for size in (0, 1, 999, 1000, 25_000_000, 1024, 3 * 1024**3, 1_500_000_000):
        assert parse_size(format_size(size)) == size
    assert format_size(25_000_000) == "25MB" and format_size(1024) == "1KiB"
    for seconds in (0.0, 0.5, 30.0, 90.0, 3600.0, 2_592_000.0):
        assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(2_592_000.0) == "30d" and format_duration(90.0) == "90s"


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:2525", HostPort("0.0.0.0", 2525)), (":2525", HostPort("", 2525)),
    ("[::]:2525", HostPort("::", 2525)), ("[::1]:0", HostPort("::1", 0)),
    ("localhost:8080", HostPort("localhost", 8080)), ("127.0.0.1:65535", HostPort("127.0.0.1", 65535)),
])
def test_parse_hostport(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(("text", "message"), [
    ("2525", "expected \"host:port\""), ("::1:2525", "brackets"), ("host:", "port ''"),
    ("host:65536", "port '65536'"), ("[nonsense]:25", "not an IPv6 address"),
    ("bad_host:25", "not a valid host name"), ("h:-1", "port '-1'"),
])
def test_parse_hostport_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_hostport(text)


def test_networks_are_normalised() -> None:
    config = parse("smtp:\n  allow_networks: [10.0.0.1/8, 192.0.2.7, '2001:db8::1/32']\n")
    assert [str(n) for n in config.smtp.allow_networks] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]


# --- paths and files ------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem", "mqtt-password"):
        (tmp_path / "tls" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "tls" / name).write_text("x\n")
    (tmp_path / "vmond.yaml").write_text(textwrap.dedent("""\
        storage: {data_dir: data}
        smtp:
          tls: {certificate: tls/cert.pem, key: ./tls/key.pem, implicit_tls_listen: ":465"}
        mqtt:
          username: vmond
          password_file: tls/../tls/mqtt-password
          tls: {enabled: true, ca_file: tls/ca.pem}
        """))
    config = load_config(tmp_path / "vmond.yaml")
    assert config.storage.data_dir == tmp_path / "data"
    assert config.smtp.tls.certificate == tmp_path / "tls" / "cert.pem"
    assert config.smtp.tls.key == tmp_path / "tls" / "key.pem"
    assert config.smtp.tls.implicit_tls_listen == HostPort("", 465)
    assert config.mqtt.password_file == tmp_path / "tls" / "mqtt-password"
    assert config.mqtt.read_password() == Secret("x")
    assert config.mqtt.tls.ca_file == tmp_path / "tls" / "ca.pem"


def test_missing_files_are_problems_unless_not_checked(tmp_path: Path) -> None:
    text = "web:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n"
    assert problems(text, base_dir=tmp_path) == [
        f"vmond.yaml:3: web.tls.certificate: file not found: {tmp_path / 'cert.pem'}",
        f"vmond.yaml:4: web.tls.key: file not found: {tmp_path / 'key.pem'}",
    ]
    config = parse(text, base_dir=tmp_path, check_files=False)
    assert config.web.tls.key == tmp_path / "key.pem"


def test_data_dir_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert only_problem("storage: {data_dir: file}\n", base_dir=tmp_path) == (
        f"vmond.yaml:1: storage.data_dir: not a directory: {tmp_path / 'file'}")


def test_load_config_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (0, "(file)")
    assert problem.file == str(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"site:\n  name: Caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:2: \(file\): not UTF-8 text"):
        load_config(tmp_path / "latin1.yaml")


# --- keys that depend on each other ---------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("smtp:\n  tls:\n    key: k\n", "vmond.yaml:3: smtp.tls.key: `smtp.tls.certificate` must be set as well"),
    ("smtp:\n  tls:\n    implicit_tls_listen: ':465'\n",
     "vmond.yaml:3: smtp.tls.implicit_tls_listen: needs `smtp.tls.certificate` and `smtp.tls.key`"),
    ("web:\n  tls: {certificate: c, key: k, self_signed: true}\n",
     "vmond.yaml:2: web.tls.self_signed: use either a certificate or self_signed, not both"),
    ("mqtt:\n  tls:\n    certificate: c\n", "vmond.yaml:3: mqtt.tls.certificate: `mqtt.tls.key` must be set as well"),
    ("mqtt:\n  username: u\n  password: p\n  password_file: f\n",
     "vmond.yaml:4: mqtt.password_file: set either `mqtt.password` or `mqtt.password_file`, not both"),
    ("mqtt:\n  password: p\n", "vmond.yaml:2: mqtt.password: a password needs `mqtt.username` as well"),
    ("web:\n  listen: ':2525'\n", "vmond.yaml:2: web.listen: port 2525 is also used by `smtp.listen`"),
    ("smtp:\n  listen: '127.0.0.1:8080'\n", "vmond.yaml:2: smtp.listen: port 8080 is also used by `web.listen`"),
])
def test_combinations(text: str, expected: str) -> None:
    assert only_problem(text, check_files=False).startswith(expected)


def test_the_audit_is_kept_at_least_as_long_as_the_events() -> None:
    assert parse("").storage.audit_retention == 365 * 86400
    assert only_problem("storage:\n  retention: 30d\n  audit_retention: 7d\n").startswith(
        "vmond.yaml:3: storage.audit_retention: must not be shorter than `storage.retention` (30d)")
    assert parse("storage:\n  retention: 400d\n").storage.audit_retention == 400 * 86400  # the default rises
    assert parse("storage: {retention: 8m, audit_retention: 8m}\n").storage.audit_retention == 480


def test_ephemeral_and_distinct_hosts_do_not_clash() -> None:
    config = parse("smtp: {listen: '127.0.0.1:0'}\nweb: {listen: '127.0.0.1:0'}\n")
    assert config.web.listen.port == config.smtp.listen.port == 0
    parse("smtp: {listen: '127.0.0.1:9000'}\nweb: {listen: '127.0.0.2:9000'}\n")


def test_client_id_defaults_to_site_id() -> None:
    assert parse("site: {id: shop-7}\n").mqtt.client_id == "vmond-shop-7"
    assert parse("site: {id: shop-7}\nmqtt: {client_id: custom}\n").mqtt.client_id == "custom"


# --- accounts and cameras -------------------------------------------------

ACCOUNTS = """\
    smtp:
      domain: Alarms.Example
    accounts:
      - name: Shop
        contacts:
          - {name: A, phone: "555-0101"}
          - {name: B, email: b@example.com}
          - {name: C, phone: "(555) 010-0103", email: c@example.com, priority: 1}
        cameras:
          - {name: Door, smtp_address: Cam-Door@ALARMS.example}
          - {name: Yard, smtp_address: cam.yard+1, rtsp_url: "rtsp://admin:hunter2@192.0.2.9/live"}
    """


def test_accounts() -> None:
    config = parse(ACCOUNTS)
    assert config.smtp.domain == "alarms.example"
    (account,) = config.accounts
    assert (account.address, account.notes) == ("", "")
    assert [(c.name, c.priority) for c in account.contacts] == [("A", 1), ("B", 2), ("C", 1)]
    assert account.contacts[1].email == "b@example.com"
    assert [c.smtp_address for c in account.cameras] == ["cam-door", "cam.yard+1"]
    assert account.cameras[1].rtsp_url.reveal() == "rtsp://admin:hunter2@192.0.2.9/live"
    assert [c.name for _, c in config.cameras()] == ["Door", "Yard"]
    assert config.find_camera("nobody") is None


def test_camera_address_with_other_domain_is_rejected() -> None:
    assert only_problem("accounts:\n  - name: A\n    cameras:\n      - {name: C, smtp_address: c@other.example}\n") == (
        "vmond.yaml:4: accounts[0].cameras[0].smtp_address: domain 'other.example' is not smtp.domain "
        "'monitor.local'; write just the part before the @")


@pytest.mark.parametrize("address", ["-cam", "cam era", "c" * 65, "cam@", "a@b@monitor.local", "ca/m"])
def test_camera_address_syntax(address: str) -> None:
    text = f"accounts:\n  - name: A\n    cameras:\n      - {{name: C, smtp_address: '{address}'}}\n"
    assert only_problem(text).startswith("vmond.yaml:4: accounts[0].cameras[0].smtp_address: ")


def test_duplicate_camera_addresses_and_account_names() -> None:
    found = problems("""\
        accounts:
          - name: Shop
            cameras:
              - {name: Door, smtp_address: cam-1}
          - name: SHOP
            cameras:
              - {name: Gate, smtp_address: Cam-1@monitor.local}
        """)
    assert found == [
        "vmond.yaml:5: accounts[1].name: duplicate account name 'SHOP' (also `accounts[0]` on line 2)",
        ("vmond.yaml:7: accounts[1].cameras[0].smtp_address: duplicate camera address 'cam-1' "
        "(also `accounts[0].cameras[0].smtp_address` on line 4)"),
    ]


def test_contacts_can_be_reached() -> None:
    found = problems("""\
        accounts:
          - name: Shop
            contacts:
              - {name: A, phone: "+15550100"}
              - {name: B, phone: call me}
              - {name: C, email: c@example}
              - {name: D, role: keyholder}
              - name: E
                phone: "12"
                email: e@example.com
        """)
    assert found == [
        ("vmond.yaml:5: accounts[0].contacts[1].phone: 'call me' is not a phone number: use digits with optional "
         "spaces, dashes, dots or parentheses and an optional leading +, e.g. +15550100 or (555) 010-0100"),
        "vmond.yaml:6: accounts[0].contacts[2].email: 'c@example' is not an e-mail address: write it like "
        "jane@example.com",
        ("vmond.yaml:7: accounts[0].contacts[3].phone: missing: a contact needs a phone number or an e-mail address "
         "(phone: or email:)"),
        "vmond.yaml:9: accounts[0].contacts[4].phone: '12' has 2 digits; a phone number has 3 to 15",
    ]


@pytest.mark.parametrize("phone", ["+15550100", "+44 (0)20 7946 0958", "(555) 010-0100", "555.010.0100", "112",
                                   "0049 30 1234567", 5550100])
def test_phone_numbers_as_people_write_them(phone: object) -> None:
    config = parse(f"accounts:\n  - name: A\n    contacts:\n      - {{name: B, phone: {phone}}}\n")
    assert config.accounts[0].contacts[0].phone == str(phone)


@pytest.mark.parametrize(("phone", "message"), [
    ("'555 0100 ext 2'", "is not a phone number"), ("'+0 555 0100'", "country code, which never starts with 0"),
    ("'(555 0100'", "unmatched or nested parentheses"), ("'+1234567890123456'", "has 16 digits"),
    ("'555-'", "is not a phone number"), ("'-5550100'", "is not a phone number"),
])
def test_phone_numbers_refused(phone: str, message: str) -> None:
    text = f"accounts:\n  - name: A\n    contacts:\n      - {{name: B, phone: {phone}}}\n"
    problem = only_problem(text)
    assert problem.startswith("vmond.yaml:4: accounts[0].contacts[0].phone: ") and message in problem


@pytest.mark.parametrize("email", ["jane@localhost", "jane@@example.com", "jane doe@example.com", "jane.@example.com",
                                   "jane@-example.com", "jane@192.0.2.1", "jane", "@example.com"])
def test_email_addresses_refused(email: str) -> None:
    text = f"accounts:\n  - name: A\n    contacts:\n      - {{name: B, email: '{email}'}}\n"
    assert only_problem(text) == (f"vmond.yaml:4: accounts[0].contacts[0].email: {email!r} is not an e-mail "
                                  "address: write it like jane@example.com")


def test_per_camera_auth_needs_passwords() -> None:
    text = "smtp: {auth: per-camera}\naccounts:\n  - name: A\n    cameras:\n      - {name: C, smtp_address: c}\n"
    assert only_problem(text) == (
        "vmond.yaml:5: accounts[0].cameras[0]: smtp.auth is per-camera, so this camera needs an smtp_password")
    parse(text.replace("smtp_address: c}", "smtp_address: c, smtp_password: s3cret}"))


# --- secrets --------------------------------------------------------------


def test_secret() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == str(secret) == f"{secret}" == "********"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other") and secret != "hunter2"
    assert len({secret, Secret("hunter2")}) == 1


def test_secrets_are_masked_in_repr_dump_and_problems() -> None:
    config = parse("""\
        mqtt: {username: vmond, password: hunter2}
        accounts:
          - name: A
            cameras:
              - {name: C, smtp_address: c, smtp_password: pa55word, rtsp_url: "rtsp://u:rtsp-pw@h/"}
        """)
    assert config.mqtt.password.reveal() == "hunter2"
    for text in (repr(config), str(config), dump_masked(config)):
        for secret in ("hunter2", "pa55word", "rtsp-pw"):
            assert secret not in text
        assert "********" in text
    dumped = yaml.safe_load(dump_masked(config))
    assert dumped["mqtt"]["password"] == "********"
    assert dumped["accounts"][0]["cameras"][0]["rtsp_url"] == "********"
    wrong = problems("accounts:\n  - name: A\n    cameras:\n      - {name: C, smtp_address: c, "
                     "rtsp_url: 'http://u:top-secret@h/'}\n")
    assert wrong == [("vmond.yaml:4: accounts[0].cameras[0].rtsp_url: must be a URL starting with "
                     "rtsp:// or rtsps://")]


def test_dump_reads_back_to_the_same_config(tmp_path: Path) -> None:
    shutil.copy(DEV, tmp_path / "vmond.yaml")
    config = load_config(tmp_path / "vmond.yaml")
    dumped = dump_masked(config)
    assert "max_message_size: 25MB" in dumped and "retention: 30d" in dumped
    assert parse(dumped) == dataclasses.replace(config, source=None)


# --- each key declared once -----------------------------------------------


def test_a_field_declared_as_no_key_is_refused() -> None:
    # The checker's table, the builder and the dump all come from the section dataclasses; a field that does
    # not say how the file sets it would be built but never read from the file, so deriving the table refuses it.
    @dataclasses.dataclass(frozen=True)
    class Section:
        declared: int = spec.setting(integer(1), 1)
        forgotten: int

    with pytest.raises(TypeError, match=r"Section\.forgotten is declared as no configuration key"):
        spec.table_of(Section)


@pytest.mark.parametrize(("declared", "message"), [
    (spec.section, r"Section\.part is a section\(\), so its type must be a section dataclass"),
    (spec.list_of, r"Section\.part is a list_of\(\), so its type must be tuple\[Item, \.\.\.\]"),
])
def test_sections_and_lists_take_their_keys_from_a_dataclass(declared: Callable[[], object],
                                                             message: str) -> None:
    @dataclasses.dataclass(frozen=True)
    class Section:
        part: int = declared()

    with pytest.raises(TypeError, match=message):
        spec.table_of(Section)



def test_a_central_serves_its_listed_sites_or_with_auto_any_well_formed_site() -> None:
    listed = parse("central:\n  sites: [{id: site-a, name: A, command_secret: s}]\n")
    assert listed.central.enabled and listed.central.serves("site-a") and not listed.central.serves("site-b")
    auto = parse("central:\n  sites: auto\n")
    assert auto.central.auto_sites and auto.central.sites == ()
    assert auto.central.serves("site-b")
    assert not auto.central.serves("Site B") and not auto.central.serves("a" * 101) and not auto.central.serves("")
    kept_off = parse("central:\n  enabled: false\n  sites: auto\n")
    assert not kept_off.central.enabled


def test_a_central_reads_a_copy_of_the_appliances_mqtt_section() -> None:
    copied = parse("central:\n  sites: auto\n  mqtt: {enabled: true, host: broker.lan, port: 8883}\n")
    assert copied.central.enabled and (copied.central.mqtt.host, copied.central.mqtt.port) == ("broker.lan", 8883)
    assert "vmond.yaml:4: central.mqtt.enabled: a central station reaches its sites only over MQTT" in problems(
        "central:\n  sites: auto\n  mqtt:\n    enabled: false\n")[0]
    assert not parse("central:\n  enabled: false\n  mqtt:\n    enabled: false\n").central.enabled


def test_a_central_node_is_named_by_its_host_unless_the_file_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "central-b.example.net")
    default = parse("central:\n  sites: auto\n")
    assert default.central.node == "central-b"
    assert default.central.mqtt.share_group == "vmond-central"
    named = parse("central:\n  sites: auto\n  node: node_2\n  mqtt: {share_group: north}\n")
    assert (named.central.node, named.central.mqtt.share_group) == ("node_2", "north")
    monkeypatch.setattr("socket.gethostname", lambda: "ünïcode host")
    assert parse("central:\n  sites: auto\n").central.node == "n-code-host"


@pytest.mark.parametrize("bad", ["'a/b'", "'+'", "'#'", "''", "'-x'", "'" + "a" * 64 + "'"])
def test_a_central_node_name_or_share_group_is_a_safe_token(bad: str) -> None:
    assert any("central.node" in p for p in problems(f"central:\n  sites: auto\n  node: {bad}\n"))
    assert any("central.mqtt.share_group" in p
               for p in problems(f"central:\n  sites: auto\n  mqtt: {{share_group: {bad}}}\n"))
